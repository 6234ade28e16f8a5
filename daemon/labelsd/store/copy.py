"""Copy a whole library from one database into another (`labels db copy`).

The usual move is from the default SQLite file to PostgreSQL when one machine
is no longer enough, but any pair works (PostgreSQL to SQLite for a laptop
copy, SQLite to another SQLite file). What is copied: contents, their
predictions, tags and judgements (rejected and confirmed labels), tracked
paths, the pending/failed queue rows, and each content's vector with its embedding
space (a new token: the target's vector files are its own). What is
not: nodes (they describe services of the source database) and claims (a queue
row arrives unclaimed, so the target's services pick it up).

The target is migrated first (opening a `Store` does that). Rows move in
chunks in primary-key order, one short read transaction on the source per
chunk, so a library of any size streams through without sitting in memory. The
target takes them all in ONE write transaction: a copy is all or nothing. One
that fails half-way (a lost connection, a full disk, Ctrl-C) leaves the target
as it was, so trying again needs no --force.

A target that already holds images is refused unless `merge=True`. Merging is
idempotent: a row whose key the target already has (a content by its SHA-256,
a path, a queue row by path, a prediction or tag by content and rank/tag) is
left as the target has it, so copying twice adds nothing the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from sqlalchemy import Table, and_, func, or_, select
from sqlalchemy.orm import Session

from labelsd.errors import LabelsError
from labelsd.store.engine import Store, dialect_insert
from labelsd.store.schema import (
    Content,
    Embedding,
    EmbeddingSpace,
    Judgement,
    Prediction,
    QueueItem,
    Tag,
    TrackedPath,
    as_utc,
)

log = logging.getLogger(__name__)

# Copy order respects the foreign keys (predictions, tags and paths point at contents).
TABLES = ("contents", "predictions", "tags", "judgements", "paths", "queue", "embeddings")


class TargetNotEmpty(LabelsError):
    """The target database already holds a library and merging was not asked for."""


class SameDatabase(LabelsError):
    """Source and target are the same database."""


def _utc(value):
    """A time column's value in UTC (see `as_utc`), so neither target misreads it."""
    return as_utc(value) if isinstance(value, datetime) else value


def _insert_ignoring_existing(session: Session, table: Table, keys: list[str]):
    return dialect_insert(session, table).on_conflict_do_nothing(index_elements=keys)


def row_counts(store: Store) -> dict[str, int]:
    """How many rows each copied table holds."""
    with store.read() as session:
        return _row_counts(session)


def _row_counts(session: Session) -> dict[str, int]:
    tables = {"contents": Content, "predictions": Prediction, "tags": Tag,
              "judgements": Judgement, "paths": TrackedPath, "queue": QueueItem, "embeddings": Embedding}
    return {name: session.scalar(select(func.count()).select_from(model))
            for name, model in tables.items()}


def _chunks(source: Store, stmt, key_columns, chunk: int) -> Iterator[list[dict]]:
    """Rows of `stmt` in chunks by keyset pagination on `key_columns` (never OFFSET,
    never the whole table): one short read transaction per chunk."""
    last = None
    while True:
        page = stmt.order_by(*key_columns).limit(chunk)
        if last is not None:
            page = page.where(_after(key_columns, last))
        with source.read() as session:
            rows = [dict(row._mapping) for row in session.execute(page)]
        if not rows:
            return
        yield rows
        if len(rows) < chunk:
            return
        last = tuple(rows[-1][c.key] for c in key_columns)


def _after(key_columns, last: tuple):
    """(a, b) > (x, y) spelled portably: a > x OR (a = x AND b > y)."""
    first, *rest = key_columns
    if not rest:
        return first > last[0]
    return or_(first > last[0], and_(first == last[0], _after(rest, last[1:])))


def copy_library(source: Store, target: Store, chunk: int = 1000, *, merge: bool = False,
                 progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy the library in `source` into `target` (already migrated: opening a
    Store migrates it). Returns how many rows each table gained in the target.

    Raises TargetNotEmpty when the target holds images and `merge` is false,
    SameDatabase when both are one database. `progress(table, rows)` is called
    after each chunk written.
    """
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    if source.engine.url == target.engine.url:
        raise SameDatabase(f"source and target are the same database ({target.where})")
    with target.write() as session:  # all or nothing (see the module's docstring)
        before = _row_counts(session)
        if not merge and any(before[t] for t in ("contents", "paths", "queue")):
            raise TargetNotEmpty(
                f"the target database {target.where} already holds a library "
                f"({before['paths']} paths, {before['contents']} contents); pass --force to "
                "merge into it (rows it already has are kept as they are)")
        for name, table, columns, key_columns, conflict_key in _PLANS:
            written = 0
            for rows in _chunks(source, select(*columns), key_columns, chunk):
                values = [{k: _utc(v) for k, v in row.items() if k != "id"} for row in rows]
                session.execute(_insert_ignoring_existing(session, table, conflict_key), values)
                written += len(rows)
                if progress is not None:
                    progress(name, written)
            log.info("copied %d %s row(s)", written, name)
        _copy_vectors(source, session, chunk, progress)
        after = _row_counts(session)
    return {name: after[name] - before[name] for name in TABLES}


def _copy_vectors(source: Store, session: Session, chunk: int, progress) -> None:
    """Each content's vector, its embedding space found or made in the target by (model,
    codec): space ids differ between databases."""
    from labelsd.store.embeddings import space_id

    with source.read() as read:
        spaces = {row.id: space_id(session, row.model, row.codec)
                  for row in read.execute(select(EmbeddingSpace.__table__))}
    table = Embedding.__table__
    written = 0
    for rows in _chunks(source, select(*table.c), [table.c.id], chunk):
        values = [{"sha256": r["sha256"], "space": spaces[r["space"]], "vector": r["vector"]} for r in rows]
        session.execute(_insert_ignoring_existing(session, table, ["sha256"]), values)
        written += len(rows)
        if progress is not None:
            progress("embeddings", written)
    log.info("copied %d embeddings row(s)", written)


_PLANS = [
    # (name, table, columns selected, keyset key, conflict key)
    ("contents", Content.__table__, list(Content.__table__.c), [Content.sha256], ["sha256"]),
    ("predictions", Prediction.__table__, list(Prediction.__table__.c),
     [Prediction.sha256, Prediction.rank], ["sha256", "rank"]),
    ("tags", Tag.__table__, list(Tag.__table__.c), [Tag.sha256, Tag.tag_key],
     ["sha256", "tag_key"]),
    ("judgements", Judgement.__table__, list(Judgement.__table__.c),
     [Judgement.sha256, Judgement.class_index], ["sha256", "class_index"]),
    # paths and queue rows are read in id order (kept), but inserted without
    # their ids: the target's sequences give its own.
    ("paths", TrackedPath.__table__, list(TrackedPath.__table__.c), [TrackedPath.id], ["path"]),
    ("queue", QueueItem.__table__,
     [c for c in QueueItem.__table__.c if c.key not in ("claimed_by", "claimed_at")],
     [QueueItem.id], ["path"]),
]
