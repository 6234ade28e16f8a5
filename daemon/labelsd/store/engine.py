"""The store: one database (SQLite or PostgreSQL, opened by connect.py), short
explicit transactions, and reading image records.

Writes go through `Store.write()`, reads through `Store.read()`; each is one
transaction. On SQLite write transactions start with BEGIN IMMEDIATE so two
writers queue on the busy timeout instead of failing half-way (connect.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, bindparam, case, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from labelsd.errors import NotTracked, StoreUnavailable
from labelsd.paths import canonical_path
from labelsd.records import ImageRecord
from labelsd.records import Prediction as PredictionRecord
from labelsd.store import migrations
from labelsd.store.connect import POOL_TIMEOUT_S, enable_wal, explain, is_url, sqlite_engine, url_engine
from labelsd.store.schema import Content, Prediction, QueueItem, Tag, TrackedPath, as_utc

log = logging.getLogger(__name__)

# The most values in one `IN (...)` list or one multi-row write: SQLite before 3.32
# allowed 999 bound variables per statement; 500 stays below it with room to spare.
CHUNK = 500


def dialect_insert(session: Session, table):
    """An INSERT with ON CONFLICT support for the session's database (both
    dialects spell `on_conflict_do_update` / `_do_nothing` alike)."""
    return (pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert)(table)


def write_rows(session: Session, stmt, rows: list[dict]) -> None:
    """Run an INSERT (upsert) `stmt` for many rows (dicts with the same keys) in one
    statement. SQLite: executemany, a loop in C within the process. PostgreSQL:
    `INSERT ... SELECT * FROM unnest(:col1, :col2, ...)` with one array per column,
    so the SQL text is the same whatever the number of rows: SQLAlchemy compiles it
    once and the server prepares it once, where a multi-row VALUES would be compiled
    afresh per size and an executemany would run a statement (and fire the
    counters' statement triggers) per row."""
    if not rows:
        return
    if session.bind.dialect.name != "postgresql":
        session.execute(stmt, rows)
        return
    names = list(rows[0])
    table = stmt.table
    columns = func.unnest(*(bindparam(f"col_{name}", type_=ARRAY(table.c[name].type))
                            for name in names)).table_valued(*names).render_derived(name="v")
    session.execute(stmt.from_select(names, select(*(columns.c[name] for name in names))),
                    {f"col_{name}": [row[name] for row in rows] for name in names})


class Store:
    """One database. Thread-safe: every transaction takes its own connection."""

    def __init__(self, db: str, *, migrate: bool = True):
        self.db = db
        self.where = db if is_url(db) else str(Path(db).expanduser())
        self.engine = url_engine(db) if is_url(db) else sqlite_engine(db)
        self._write_engine = self.engine.execution_options(labelsd_write=True)
        try:
            if self.dialect == "sqlite":
                enable_wal(self.engine, self.where)
            if migrate:
                migrations.migrate(self._write_engine)
        except (DBAPIError, OperationalError) as err:
            self.engine.dispose()
            raise explain(err, self.where) from err
        except StoreUnavailable:
            self.engine.dispose()
            raise

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self, engine: Engine) -> Iterator[Session]:
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                yield session
        except (OperationalError, DBAPIError) as err:
            raise explain(err, self.where) from err
        except PoolTimeout as err:
            raise StoreUnavailable(f"every connection to {self.where} stayed busy for "
                                   f"{POOL_TIMEOUT_S}s; try again") from err

    def write(self) -> contextmanager:
        """One write transaction (committed on success, rolled back on error)."""
        return self._transaction(self._write_engine)

    def read(self) -> contextmanager:
        """One read transaction (a consistent snapshot)."""
        return self._transaction(self.engine)

    # ---- records -----------------------------------------------------------

    def record(self, path: str) -> ImageRecord | None:
        """The record of one path, or None when the store does not track it."""
        with self.read() as session:
            found = _load_records(session, _record_select().where(
                TrackedPath.path == canonical_path(path)))
        return found[0] if found else None

    def require_content(self, session: Session, path: str) -> TrackedPath:
        """The tracked path row for `path` that has a content, or NotTracked."""
        row = session.scalar(select(TrackedPath).where(TrackedPath.path == canonical_path(path)))
        if row is None:
            raise NotTracked(f"{canonical_path(path)} is not tracked by labelsd")
        if row.sha256 is None:
            raise NotTracked(
                f"{row.path} has not been read yet; try again once `labels show` says done")
        return row

    def records(self, status: str | None = None, chunk: int = 1000) -> Iterator[ImageRecord]:
        """Every record (optionally of one status), ordered by path, streamed in
        chunks so a large library never sits in memory at once."""
        last = ""
        while True:
            stmt = _record_select().where(TrackedPath.path > last)
            if status:
                stmt = stmt.where(STATUS_EXPR == status)
            with self.read() as session:
                batch = _load_records(session, stmt.order_by(TrackedPath.path).limit(chunk))
            yield from batch
            if len(batch) < chunk:
                return
            last = batch[-1].path

    def records_for_paths(self, paths: Iterable[str]) -> list[ImageRecord]:
        """Records of the given stored paths, in the given order."""
        wanted = list(paths)
        by_path: dict[str, ImageRecord] = {}
        with self.read() as session:
            for start in range(0, len(wanted), CHUNK):
                part = wanted[start:start + CHUNK]
                for rec in _load_records(
                        session, _record_select().where(TrackedPath.path.in_(part))):
                    by_path[rec.path] = rec
        return [by_path[p] for p in wanted if p in by_path]

    def counts(self) -> dict[str, int]:
        """How many tracked paths are in each status (all four keys present)."""
        totals = dict.fromkeys(("pending", "done", "failed", "missing"), 0)
        stmt = _join(select(STATUS_EXPR, func.count())).group_by(STATUS_EXPR)
        with self.read() as session:
            for status, count in session.execute(stmt):
                totals[status] = count
        return totals


# A path's status, derived (never stored twice): missing wins; a queue row means
# the path is waiting (or failed before its content could be read); otherwise the
# status of its content.
STATUS_EXPR = case(
    (TrackedPath.missing.is_(True), "missing"),
    (QueueItem.state == "failed", "failed"),
    (QueueItem.id.is_not(None), "pending"),
    (Content.status.is_(None), "pending"),
    else_=Content.status,
).label("status")

ERROR_EXPR = case(
    (QueueItem.state == "failed", QueueItem.last_error),
    (QueueItem.id.is_not(None), None),
    else_=Content.error,
).label("error")


def _join(stmt):
    return (stmt.select_from(TrackedPath)
            .outerjoin(Content, Content.sha256 == TrackedPath.sha256)
            .outerjoin(QueueItem, QueueItem.path == TrackedPath.path))


def _record_select():
    return _join(select(TrackedPath.path, TrackedPath.sha256, STATUS_EXPR, ERROR_EXPR,
                        Content.width, Content.height, Content.classified_at,
                        Content.taken_at, Content.camera, Content.gps_lat, Content.gps_lon,
                        Content.model))


def _load_records(session: Session, stmt) -> list[ImageRecord]:
    """Run a `_record_select()` and attach predictions and tags with one query
    each for the whole batch (never a query per image)."""
    records = [
        ImageRecord(path=row.path, sha256=row.sha256, status=row.status, error=row.error,
                    width=row.width, height=row.height, classified_at=row.classified_at,
                    taken_at=row.taken_at, camera=row.camera, gps_lat=row.gps_lat,
                    gps_lon=row.gps_lon, model=row.model)
        for row in session.execute(stmt)
    ]
    shas = sorted({r.sha256 for r in records if r.sha256})
    labels: dict[str, list[PredictionRecord]] = {}
    tags: dict[str, list[str]] = {}
    for start in range(0, len(shas), CHUNK):
        part = shas[start:start + CHUNK]
        # Plain rows, not ORM objects: this runs for every result of a search.
        for row in session.execute(
                select(Prediction.sha256, Prediction.rank, Prediction.label, Prediction.wnid,
                       Prediction.class_index, Prediction.score)
                .where(Prediction.sha256.in_(part))
                .order_by(Prediction.sha256, Prediction.rank)):
            labels.setdefault(row[0], []).append(PredictionRecord(*row[1:]))
        for sha, tag in session.execute(select(Tag.sha256, Tag.tag).where(Tag.sha256.in_(part))
                                        .order_by(Tag.sha256, Tag.tag_key)):
            tags.setdefault(sha, []).append(tag)
    for rec in records:
        rec.classified_at = as_utc(rec.classified_at)
        if rec.sha256:
            rec.labels = labels.get(rec.sha256, []) if rec.status != "pending" else []
            rec.tags = tags.get(rec.sha256, [])
    return records


def open_store(db: str, *, migrate: bool = True) -> Store:
    """Open (creating if needed) the database at a file path or SQLAlchemy URL."""
    return Store(db, migrate=migrate)
