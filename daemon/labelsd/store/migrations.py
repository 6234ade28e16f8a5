"""Recorded schema migrations.

Every database, new or old, is brought to the newest schema by running the
migrations it has not recorded yet, in order, in one transaction. The
`schema_migrations` table records what ran. Migrations are written against
frozen table definitions (never the live ORM models), so that they keep meaning
the same thing when the models change. They use only portable SQLAlchemy DDL, so
the same steps run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)

from labelsd.store import query_indexes  # migrations 5 and 7, in a module of their own

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"


def _v1_initial(conn: Connection) -> None:
    """The first schema: contents, paths, predictions, tags, queue, nodes."""
    md = MetaData()
    Table(
        "contents", md,
        Column("sha256", String(64), primary_key=True),
        Column("size", BigInteger, nullable=False),
        Column("width", Integer),
        Column("height", Integer),
        Column("format", String(16)),
        Column("status", String(16), nullable=False),
        Column("error", Text),
        Column("model", String(80)),
        Column("classified_at", DateTime(timezone=True)),
    )
    Table(
        "paths", md,
        Column("id", Integer, primary_key=True),
        Column("path", Text, nullable=False, unique=True),
        Column("sha256", String(64), ForeignKey("contents.sha256"), index=True),
        Column("size", BigInteger),
        Column("mtime_ns", BigInteger),
        Column("first_seen", DateTime(timezone=True), nullable=False),
        Column("last_seen", DateTime(timezone=True), nullable=False),
        Column("missing", Boolean, nullable=False),
    )
    Table(
        "predictions", md,
        Column("sha256", String(64), ForeignKey("contents.sha256", ondelete="CASCADE"),
               primary_key=True),
        Column("rank", Integer, primary_key=True),
        Column("model", String(80), nullable=False),
        Column("class_index", Integer, nullable=False),
        Column("wnid", String(16), nullable=False),
        Column("label", Text, nullable=False),
        Column("score", Float, nullable=False),
    )
    Table(
        "tags", md,
        Column("sha256", String(64), ForeignKey("contents.sha256", ondelete="CASCADE"),
               primary_key=True),
        Column("tag_key", String(200), primary_key=True),
        Column("tag", String(200), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Index("ix_tags_tag_key", "tag_key"),
    )
    Table(
        "queue", md,
        Column("id", Integer, primary_key=True),
        Column("path", Text, nullable=False, unique=True),
        Column("state", String(16), nullable=False),
        Column("enqueued_at", DateTime(timezone=True), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("last_error", Text),
        Column("claimed_by", String(200)),
        Column("claimed_at", DateTime(timezone=True)),
        Index("ix_queue_state_claim", "state", "claimed_at"),
    )
    Table(
        "nodes", md,
        Column("node_id", String(200), primary_key=True),
        Column("host", String(200), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("model", String(80)),
        Column("device", String(200)),
        Column("watching", Text, nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("heartbeat_at", DateTime(timezone=True)),
        Column("done", Integer, nullable=False),
        Column("failed", Integer, nullable=False),
    )
    md.create_all(conn)


def _v2_retry_backoff_and_search_index(conn: Connection) -> None:
    """Back-off for transient errors (queue.not_before), a clean-stop time for
    nodes, and an index that lets search go from class to images by score."""
    conn.execute(text("ALTER TABLE queue ADD COLUMN not_before TIMESTAMP WITH TIME ZONE"
                      if conn.dialect.name == "postgresql"
                      else "ALTER TABLE queue ADD COLUMN not_before DATETIME"))
    conn.execute(text("ALTER TABLE nodes ADD COLUMN stopped_at TIMESTAMP WITH TIME ZONE"
                      if conn.dialect.name == "postgresql"
                      else "ALTER TABLE nodes ADD COLUMN stopped_at DATETIME"))
    conn.execute(text(
        "CREATE INDEX ix_predictions_class_score ON predictions (class_index, score)"))


def _v3_photo_metadata_and_imported_tags(conn: Connection) -> None:
    """When and where a photo was taken and with what (contents.taken_at, camera,
    gps_lat, gps_lon, from its EXIF), and which tags were imported from the
    keywords a photo carried (tags.imported) rather than given with `labels tag`.
    Self-contained: only ADD COLUMN and CREATE INDEX, in any order after v1."""
    pg = conn.dialect.name == "postgresql"
    for column, kind in (("taken_at", "VARCHAR(32)"), ("camera", "VARCHAR(200)"),
                         ("gps_lat", "DOUBLE PRECISION" if pg else "FLOAT"),
                         ("gps_lon", "DOUBLE PRECISION" if pg else "FLOAT")):
        conn.execute(text(f"ALTER TABLE contents ADD COLUMN {column} {kind}"))
    conn.execute(text("ALTER TABLE tags ADD COLUMN imported BOOLEAN NOT NULL DEFAULT FALSE"))
    conn.execute(text("CREATE INDEX ix_contents_taken_at ON contents (taken_at)"))


# ---- v4: a queue table fit for a fleet ----------------------------------------------
# Self-contained (its own SQL, no ORM); if another migration lands with the same
# number, renumbering this one changes nothing inside it.

def _v4_fleet_queue(conn: Connection) -> None:
    """Counters kept by triggers (status without full counts), the partial index
    that claims walk, and on PostgreSQL the autovacuum a churning queue needs.

    `counters(name, shard, n)`: the sum over shards of a name is exact. Each
    PostgreSQL backend adds to its own shard (its pid mod 16), so two nodes'
    transactions never wait on one hot counter row; statement-level triggers
    with transition tables add once per statement, not per row. SQLite has one
    writer at a time and row triggers."""
    pg = conn.dialect.name == "postgresql"
    conn.execute(text("CREATE TABLE counters (name VARCHAR(40) NOT NULL, shard INTEGER NOT NULL, "
                      "n BIGINT NOT NULL, PRIMARY KEY (name, shard))"))
    # One walker per shared root (store/walks.py): who walks it now, who walked it last.
    stamp = "TIMESTAMP WITH TIME ZONE" if pg else "DATETIME"
    conn.execute(text(f"CREATE TABLE walks (root TEXT PRIMARY KEY, held_by VARCHAR(200), "
                      f"expires_at {stamp}, started_at {stamp}, finished_at {stamp}, "
                      f"walked_by VARCHAR(200))"))
    # Claims walk queued rows in id order: a partial index holds only those, and
    # with the (state, claimed_at) index gone a claim's UPDATE touches no indexed
    # column, so PostgreSQL can make it a HOT update (no index churn, less bloat).
    conn.execute(text("DROP INDEX ix_queue_state_claim"))
    conn.execute(text("CREATE INDEX ix_queue_queued ON queue (id) WHERE state = 'queued'"))
    conn.execute(text("CREATE INDEX ix_paths_missing ON paths (id) WHERE missing"
                      if pg else "CREATE INDEX ix_paths_missing ON paths (id) WHERE missing = 1"))
    conn.execute(text("CREATE INDEX ix_contents_not_done ON contents (sha256) WHERE status <> 'done'"))
    (_pg_counter_triggers if pg else _sqlite_counter_triggers)(conn)
    conn.execute(text(
        "INSERT INTO counters (name, shard, n) "
        "SELECT 'queue:' || state, 0, count(*) FROM queue GROUP BY state"))
    conn.execute(text("INSERT INTO counters (name, shard, n) SELECT 'paths', 0, count(*) FROM paths"))
    conn.execute(text("INSERT INTO counters (name, shard, n) "
                      "SELECT 'paths:missing', 0, count(*) FROM paths WHERE missing"
                      if pg else "INSERT INTO counters (name, shard, n) "
                      "SELECT 'paths:missing', 0, count(*) FROM paths WHERE missing = 1"))
    if pg:
        # Vacuum the queue after 1% of it changed (default 20%: at a million rows,
        # 200,000 dead rows before a vacuum), without cost-based pauses, and keep
        # its statistics fresh; leave room on pages for HOT updates of claims.
        conn.execute(text(
            "ALTER TABLE queue SET (autovacuum_vacuum_scale_factor = 0.01, "
            "autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_insert_scale_factor = 0.01, "
            "autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0, "
            "fillfactor = 80)"))
        conn.execute(text("ALTER TABLE counters SET (autovacuum_vacuum_scale_factor = 0, "
                          "autovacuum_vacuum_threshold = 500, fillfactor = 50)"))


def _pg_counter_triggers(conn: Connection) -> None:
    add = ("INSERT INTO counters AS c (name, shard, n) SELECT name, pg_backend_pid() % 16, sum(d) "
           "FROM ({rows}) AS delta GROUP BY name HAVING sum(d) <> 0 "
           "ON CONFLICT (name, shard) DO UPDATE SET n = c.n + excluded.n")
    queue_rows = "SELECT 'queue:' || state AS name, {sign} AS d FROM {table}"
    paths_rows = ("SELECT 'paths' AS name, {sign} AS d FROM {table} UNION ALL "
                  "SELECT 'paths:missing', {sign} FROM {table} WHERE missing")
    for table, rows in (("queue", queue_rows), ("paths", paths_rows)):
        bodies = {
            "insert": rows.format(sign=1, table="new_rows"),
            "delete": rows.format(sign=-1, table="old_rows"),
            "update": rows.format(sign=1, table="new_rows") + " UNION ALL "
                      + rows.format(sign=-1, table="old_rows"),
        }
        for op, body in bodies.items():
            name = f"count_{table}_{op}"
            conn.execute(text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"{add.format(rows=body)}; RETURN NULL; END $$"))
            refs = {"insert": "NEW TABLE AS new_rows", "delete": "OLD TABLE AS old_rows",
                    "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows"}[op]
            conn.execute(text(
                f"CREATE TRIGGER {name} AFTER {op.upper()} ON {table} REFERENCING {refs} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"))


def _sqlite_counter_triggers(conn: Connection) -> None:
    def bump(name: str, sign: str) -> str:
        return (f"INSERT INTO counters (name, shard, n) VALUES ({name}, 0, {sign}) "
                f"ON CONFLICT (name, shard) DO UPDATE SET n = n + excluded.n;")

    triggers = {
        "count_queue_insert": ("AFTER INSERT ON queue", bump("'queue:' || NEW.state", "1")),
        "count_queue_delete": ("AFTER DELETE ON queue", bump("'queue:' || OLD.state", "-1")),
        "count_queue_update": ("AFTER UPDATE OF state ON queue WHEN OLD.state <> NEW.state",
                               bump("'queue:' || OLD.state", "-1") + bump("'queue:' || NEW.state", "1")),
        "count_paths_insert": ("AFTER INSERT ON paths",
                               bump("'paths'", "1") + bump("'paths:missing'", "NEW.missing")),
        "count_paths_delete": ("AFTER DELETE ON paths",
                               bump("'paths'", "-1") + bump("'paths:missing'", "-OLD.missing")),
        "count_paths_update": ("AFTER UPDATE OF missing ON paths WHEN OLD.missing <> NEW.missing",
                               bump("'paths:missing'", "NEW.missing - OLD.missing")),
    }
    for name, (when, body) in triggers.items():
        conn.execute(text(f"CREATE TRIGGER {name} {when} BEGIN {body} END"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "queue back-off, node stop time, predictions index", _v2_retry_backoff_and_search_index),
    (3, "photo metadata (taken_at, camera, gps) and imported tags",
     _v3_photo_metadata_and_imported_tags),
    (4, "fleet: counters, walk leases, partial queue index, queue autovacuum", _v4_fleet_queue),
    (5, query_indexes.DESCRIPTION, query_indexes.add_query_indexes),
    (6, query_indexes.SEARCH_DESCRIPTION, query_indexes.add_search_index),
]
LATEST = MIGRATIONS[-1][0]

_migrations_table = Table(
    MIGRATIONS_TABLE, MetaData(),
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)


def applied_versions(conn: Connection) -> set[int]:
    if not inspect(conn).has_table(MIGRATIONS_TABLE):
        return set()
    return {row[0] for row in conn.execute(_migrations_table.select())}


def migrate(engine: Engine, target: int = LATEST) -> list[int]:
    """Run every migration up to `target` that this database has not recorded.

    Returns the versions that ran. Safe when several processes start at once: a
    read transaction first checks whether anything is due (an up-to-date
    database, the usual case, takes no write lock); only then a write
    transaction (BEGIN IMMEDIATE on SQLite, taken before the check is repeated,
    so no reader's snapshot has to be upgraded to a writer; an advisory lock on
    PostgreSQL) runs what is still due. Pass the store's write engine (the one
    whose transactions begin IMMEDIATE).
    """
    wanted = {version for version, _, _ in MIGRATIONS if version <= target}
    with engine.connect() as conn, conn.execution_options(labelsd_write=False).begin():
        if wanted <= applied_versions(conn):
            return []
    ran: list[int] = []
    with engine.connect() as conn:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7162534)"))
            _migrations_table.create(conn, checkfirst=True)
            done = applied_versions(conn)
            for version, description, step in MIGRATIONS:
                if version > target or version in done:
                    continue
                log.info("migrating database to schema version %d (%s)", version, description)
                step(conn)
                conn.execute(_migrations_table.insert().values(
                    version=version, description=description,
                    applied_at=datetime.now(timezone.utc)))
                ran.append(version)
    return ran
