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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

# Migration 4, 5 to 7, and 9 in modules of their own
from labelsd.store import embedding_schema, fleet_schema, query_indexes

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


def _v8_judgements(conn: Connection) -> None:
    """What a person said of a content's labels (store/judgements.py): one row per
    (content, class), `rejected` or `confirmed`, with where it was said (cli, xmp,
    web) and when. Its own table, never a mark on the predictions: the writer
    replaces a content's predictions when it relabels it, and a judgement must
    outlive that. On SQLite stored in key order (WITHOUT ROWID, as migration 7
    stores predictions): a content's judgements are one step and a range, and
    (class, content), the index search reads, is covering."""
    pg = conn.dialect.name == "postgresql"
    conn.execute(text(f"""CREATE TABLE judgements (
	sha256 VARCHAR(64) NOT NULL,
	class_index INTEGER NOT NULL,
	wnid VARCHAR(16) NOT NULL,
	label TEXT NOT NULL,
	verdict VARCHAR(16) NOT NULL CHECK (verdict IN ('rejected', 'confirmed')),
	source VARCHAR(8) NOT NULL,
	judged_at {"TIMESTAMP WITH TIME ZONE" if pg else "DATETIME"} NOT NULL,
	PRIMARY KEY (sha256, class_index),
	FOREIGN KEY(sha256) REFERENCES contents (sha256) ON DELETE CASCADE
){"" if pg else " WITHOUT ROWID"}"""))
    conn.execute(text("CREATE INDEX ix_judgements_class ON judgements (class_index, sha256)"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "queue back-off, node stop time, predictions index", _v2_retry_backoff_and_search_index),
    (3, "photo metadata (taken_at, camera, gps) and imported tags",
     _v3_photo_metadata_and_imported_tags),
    (4, fleet_schema.DESCRIPTION, fleet_schema.fleet_queue),
    (5, query_indexes.DESCRIPTION, query_indexes.add_query_indexes),
    (6, query_indexes.SEARCH_DESCRIPTION, query_indexes.add_search_index),
    (7, query_indexes.CLUSTER_DESCRIPTION, query_indexes.cluster_search_rows),
    (8, "label judgements (rejected and confirmed labels of a content)", _v8_judgements),
    (9, embedding_schema.DESCRIPTION, embedding_schema.add_embeddings),
]
LATEST = max(version for version, _, _ in MIGRATIONS)

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
    with engine.connect() as conn, _foreign_keys_checked_at_commit(conn):
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7162534)"))
            _migrations_table.create(conn, checkfirst=True)
            done = applied_versions(conn)
            new = not done  # a new library is created at the latest schema: said once, below
            for version, description, step in sorted(MIGRATIONS, key=lambda m: m[0]):
                if version > target or version in done:
                    continue
                log.log(logging.DEBUG if new else logging.INFO,
                        "migrating database to schema version %d (%s)", version, description)
                step(conn)
                conn.execute(_migrations_table.insert().values(
                    version=version, description=description,
                    applied_at=datetime.now(timezone.utc)))
                ran.append(version)
            if ran and conn.dialect.name == "sqlite":
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:  # rolled back: the database stays as it was
                    raise RuntimeError(f"migration {ran} broke {len(broken)} foreign keys, "
                                       f"first {tuple(broken[0])}; nothing was changed")
    if ran and new:
        log.info("created a new database at schema version %d", ran[-1])
    return ran


@contextmanager
def _foreign_keys_checked_at_commit(conn: Connection) -> Iterator[None]:
    """On SQLite, migrations run with foreign keys off and are checked as a whole
    before they commit (`PRAGMA foreign_key_check`, in `migrate`): SQLite's own
    procedure for rebuilding a table, whose DROP TABLE would otherwise delete
    every row that references it (ON DELETE CASCADE). The pragma does nothing
    inside a transaction, so it is set before the migrations' transaction
    begins, and set back on the pooled connection after it ends."""
    if conn.dialect.name != "sqlite":
        yield
        return
    dbapi_conn = conn.connection.dbapi_connection
    dbapi_conn.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        try:
            dbapi_conn.execute("PRAGMA foreign_keys = ON")
        except Exception:
            conn.invalidate()  # never back in the pool without its foreign keys
            raise
