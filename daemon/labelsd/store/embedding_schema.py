"""Migration 9: each content's embedding (`labels similar`, `labels duplicates`).
Self-contained (its own SQL, no ORM) and independent of migration 8: it only adds
tables, so the two may run in either order on a database that missed both.

- `embedding_spaces`: one row per (model, codec) that made vectors: the model's
  stored name ("EfficientNetLite0/imagenet") and the stored form
  (labelsd.vectors.codec.CODEC). Vectors of two spaces are never compared: a
  model switch, or new weights, makes a new space, and the contents are embedded
  again in it. `token` is random: a vector file (labelsd.vectors.matrix) made from
  another database never passes for this one's.
- `embeddings`: one row per content (its current vector), `id` in the order rows
  were written (AUTOINCREMENT on SQLite: an id is never reused), so a vector file
  catches up by reading the rows after the last id it holds; `(space, id)` indexed
  for that. A row is about 330 bytes on SQLite (the 256-byte vector, the SHA-256 as
  text) plus its two index entries.
- Counters (store/counters.py's table, kept by triggers as migration 4's are):
  `contents` (every content) and `embeddings:<space id>` (a space's vectors), so that
  `labels status`' progress and a vector file's check against the database cost the
  same at ten photos and at a million (counting them took 0.2 and 0.09 s there).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

DESCRIPTION = "embeddings: a vector per content (similar photos, near-duplicates) and their spaces"


def add_embeddings(conn: Connection) -> None:
    pg = conn.dialect.name == "postgresql"
    if pg:
        space_id, row_id, blob = "SERIAL PRIMARY KEY", "BIGSERIAL PRIMARY KEY", "BYTEA"
        stamp = "TIMESTAMP WITH TIME ZONE"
    else:
        space_id = row_id = "INTEGER PRIMARY KEY AUTOINCREMENT"
        blob, stamp = "BLOB", "DATETIME"
    conn.execute(text(
        f"CREATE TABLE embedding_spaces (id {space_id}, model VARCHAR(80) NOT NULL, "
        f"codec VARCHAR(40) NOT NULL, token VARCHAR(32) NOT NULL, created_at {stamp} NOT NULL, "
        "CONSTRAINT uq_embedding_spaces UNIQUE (model, codec))"))
    conn.execute(text(
        f"CREATE TABLE embeddings (id {row_id}, "
        "sha256 VARCHAR(64) NOT NULL REFERENCES contents (sha256) ON DELETE CASCADE, "
        "space INTEGER NOT NULL REFERENCES embedding_spaces (id), "
        f"vector {blob} NOT NULL, CONSTRAINT uq_embeddings_sha256 UNIQUE (sha256))"))
    conn.execute(text("CREATE INDEX ix_embeddings_space ON embeddings (space, id)"))
    (_pg_counters if pg else _sqlite_counters)(conn)
    conn.execute(text("INSERT INTO counters (name, shard, n) SELECT 'contents', 0, count(*) FROM contents"))


def _sqlite_counters(conn: Connection) -> None:
    def bump(name: str, sign: str) -> str:
        return (f"INSERT INTO counters (name, shard, n) VALUES ({name}, 0, {sign}) "
                f"ON CONFLICT (name, shard) DO UPDATE SET n = n + excluded.n;")

    for name, when, body in (
            ("count_contents_insert", "AFTER INSERT ON contents", bump("'contents'", "1")),
            ("count_contents_delete", "AFTER DELETE ON contents", bump("'contents'", "-1")),
            ("count_embeddings_insert", "AFTER INSERT ON embeddings", bump("'embeddings:' || NEW.space", "1")),
            ("count_embeddings_delete", "AFTER DELETE ON embeddings", bump("'embeddings:' || OLD.space", "-1"))):
        conn.execute(text(f"CREATE TRIGGER {name} {when} BEGIN {body} END"))


def _pg_counters(conn: Connection) -> None:
    """Statement-level, with transition tables, each backend on its own shard (as
    migration 4's): an upsert's updated rows are not in its INSERT's new rows."""
    add = ("INSERT INTO counters AS c (name, shard, n) SELECT name, pg_backend_pid() % 16, sum(d) "
           "FROM ({rows}) AS delta GROUP BY name HAVING sum(d) <> 0 "
           "ON CONFLICT (name, shard) DO UPDATE SET n = c.n + excluded.n")
    rows = {"contents": "SELECT 'contents' AS name, {sign} AS d FROM {table}",
            "embeddings": "SELECT 'embeddings:' || space AS name, {sign} AS d FROM {table}"}
    for table, row in rows.items():
        for op, sign, refs, transition in (("insert", 1, "NEW TABLE AS new_rows", "new_rows"),
                                           ("delete", -1, "OLD TABLE AS old_rows", "old_rows")):
            name = f"count_{table}_{op}"
            conn.execute(text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"{add.format(rows=row.format(sign=sign, table=transition))}; RETURN NULL; END $$"))
            conn.execute(text(f"CREATE TRIGGER {name} AFTER {op.upper()} ON {table} REFERENCING {refs} "
                              f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"))


__all__ = ["DESCRIPTION", "add_embeddings"]
