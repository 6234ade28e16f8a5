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
  for that and for counting a space's vectors. A row is about 330 bytes on SQLite
  (the 256-byte vector, the SHA-256 as text) plus its two index entries.
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


__all__ = ["DESCRIPTION", "add_embeddings"]
