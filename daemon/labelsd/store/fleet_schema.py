"""Migration 4: a queue table fit for a fleet. Self-contained (its own SQL, no
ORM): if another migration lands with the same number, renumbering this one
changes nothing inside it."""

from __future__ import annotations

from sqlalchemy import Connection, text

DESCRIPTION = "fleet: counters, walk leases, partial queue index, queue autovacuum"


def fleet_queue(conn: Connection) -> None:
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


__all__ = ["DESCRIPTION", "fleet_queue"]
