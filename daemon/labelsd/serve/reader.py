"""Read-only access to a library for the query commands, without SQLAlchemy on SQLite.

`labels search`, `show`, `list`, `stats`, `status`, `tags` and `export` only
read. On a SQLite file they open it with the standard library's sqlite3 in
read-only mode (`file:...?mode=ro`): nothing is created, nothing migrated, and
the command does not pay for importing SQLAlchemy (about half its start-up).
A URL (PostgreSQL) goes through the service's `Store`, as do callers that
already hold one (`as_reader(store)`).

The SQL here is written once, in the dialect both databases share, with
`:name` parameters (sqlite3 and SQLAlchemy's `text()` both take them). A
path's status is derived exactly as `store.engine.STATUS_EXPR` derives it;
tests check the two agree.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from labelsd.errors import StoreUnavailable
from labelsd.records import ImageRecord, Prediction

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30

# A path's status and error, derived as store.engine's STATUS_EXPR/ERROR_EXPR
# derive them: missing wins; a queue row means waiting (or failed before the
# content could be read); otherwise the content's own.
STATUS_SQL = """CASE WHEN p.missing THEN 'missing'
            WHEN q.state = 'failed' THEN 'failed'
            WHEN q.id IS NOT NULL THEN 'pending'
            WHEN c.status IS NULL THEN 'pending'
            ELSE c.status END"""
ERROR_SQL = """CASE WHEN q.state = 'failed' THEN q.last_error
            WHEN q.id IS NOT NULL THEN NULL
            ELSE c.error END"""
FROM_PATHS = """FROM paths p
LEFT JOIN contents c ON c.sha256 = p.sha256
LEFT JOIN queue q ON q.path = p.path"""
RECORD_SELECT = (f"SELECT p.path, p.sha256, {STATUS_SQL} AS status, {ERROR_SQL} AS error, "
                 "c.width, c.height, c.classified_at, c.taken_at, c.camera, c.gps_lat, c.gps_lon, "
                 "c.model "
                 f"{FROM_PATHS}")


def where_shown(db: str) -> str:
    """The database as `labels status` names it: a URL's password left out."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", db)


def in_list(name: str, values: Sequence, params: dict) -> str:
    """`:name0, :name1, ...` for an IN (...) list, its values added to `params`."""
    for i, value in enumerate(values):
        params[f"{name}{i}"] = value
    return ", ".join(f":{name}{i}" for i in range(len(values))) or "NULL"


def as_utc(value) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back text, naive)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None
            else value.astimezone(timezone.utc))


class Reader(ABC):
    """A read-only view of one library. `read()` is one snapshot, yielding a
    function `run(sql, params) -> list of row tuples`."""

    where: str
    dialect: str

    @abstractmethod
    def read(self) -> AbstractContextManager:
        """One snapshot of the library (a context manager yielding `run`)."""

    def close(self) -> None:  # noqa: B027 - most readers hold nothing to close
        """Release what the reader holds (the sqlite3 reader's connection)."""

    # ---- records (the JSON contract in docs/contract.md) ---------------------------

    def record(self, path: str) -> ImageRecord | None:
        from labelsd.paths import canonical_path

        found = self.records_for_paths([canonical_path(path)])
        return found[0] if found else None

    def records(self, status: str | None = None, chunk: int = 1000) -> Iterator[ImageRecord]:
        """Every record (optionally of one status), ordered by path, in chunks."""
        last = ""
        while True:
            params = {"last": last, "chunk": chunk}
            sql = RECORD_SELECT + " WHERE p.path > :last"
            if status:
                sql += f" AND ({STATUS_SQL}) = :status"
                params["status"] = status
            with self.read() as run:
                batch = load_records(run, sql + " ORDER BY p.path LIMIT :chunk", params)
            yield from batch
            if len(batch) < chunk:
                return
            last = batch[-1].path

    def records_for_paths(self, paths: Iterable[str]) -> list[ImageRecord]:
        """Records of the given stored paths, in the given order."""
        wanted = list(paths)
        by_path: dict[str, ImageRecord] = {}
        with self.read() as run:
            for start in range(0, len(wanted), 500):
                params: dict = {}
                sql = RECORD_SELECT + f" WHERE p.path IN ({in_list('p', wanted[start:start + 500], params)})"
                for rec in load_records(run, sql, params):
                    by_path[rec.path] = rec
        return [by_path[p] for p in wanted if p in by_path]

    def counts(self) -> dict[str, int]:
        """Tracked paths in each status (all four keys present): from the counters
        the triggers keep (store/counters.py), the same cost at any library size;
        a full count for a library from before them (one not migrated since)."""
        from labelsd.store.counters import counted_statuses  # plain SQL, no SQLAlchemy

        try:
            with self.read() as run:
                return counted_statuses(run)
        except StoreUnavailable:
            log.debug("no counters in %s; counting every path", self.where, exc_info=True)
        totals = dict.fromkeys(("pending", "done", "failed", "missing"), 0)
        sql = f"SELECT {STATUS_SQL} AS status, count(*) {FROM_PATHS} GROUP BY 1"
        with self.read() as run:
            for status, count in run(sql, {}):
                totals[status] = count
        return totals


def load_records(run, sql: str, params: dict) -> list[ImageRecord]:
    """Run a RECORD_SELECT and attach labels and tags with one query each per
    500 contents (never a query per image)."""
    records = [ImageRecord(path=r[0], sha256=r[1], status=r[2], error=r[3], width=r[4],
                           height=r[5], classified_at=as_utc(r[6]), taken_at=r[7], camera=r[8],
                           gps_lat=r[9], gps_lon=r[10], model=r[11]) for r in run(sql, params)]
    shas = sorted({r.sha256 for r in records if r.sha256})
    labels: dict[str, list[Prediction]] = {}
    tags: dict[str, list[str]] = {}
    for start in range(0, len(shas), 500):
        params = {}
        part = in_list("s", shas[start:start + 500], params)
        for row in run("SELECT sha256, rank, label, wnid, class_index, score FROM predictions "
                       f"WHERE sha256 IN ({part}) ORDER BY sha256, rank", params):
            labels.setdefault(row[0], []).append(Prediction(*row[1:]))
        for sha, tag in run(f"SELECT sha256, tag FROM tags WHERE sha256 IN ({part}) "
                            "ORDER BY sha256, tag_key", params):
            tags.setdefault(sha, []).append(tag)
    for rec in records:
        if rec.sha256:
            rec.labels = labels.get(rec.sha256, []) if rec.status != "pending" else []
            rec.tags = tags.get(rec.sha256, [])
    return records


def _uri_path(path: Path) -> str:
    """The path part of a SQLite `file:` URI (the characters a URI gives meaning to
    escaped; urllib.parse would cost the command 10 ms of start-up)."""
    text = str(path.resolve())
    for char, escaped in (("%", "%25"), ("?", "%3f"), ("#", "%23")):
        text = text.replace(char, escaped)
    return text


class SqliteReader(Reader):
    """A SQLite file opened read-only with the standard library."""

    dialect = "sqlite"

    def __init__(self, path: Path):
        self.where = str(path)
        try:
            self._conn = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True,
                                         timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as err:
            raise explain(err, self.where) from err

    @contextmanager
    def read(self) -> Iterator:
        conn = self._conn

        def run(sql: str, params: dict) -> list[tuple]:
            return conn.execute(sql, params).fetchall()

        try:
            conn.execute("BEGIN")
            try:
                yield run
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise explain(err, self.where) from err

    def close(self) -> None:
        self._conn.close()


class StoreReader(Reader):
    """The same reads through a SQLAlchemy `Store` (PostgreSQL, or a Store a
    caller already holds)."""

    def __init__(self, store):
        self.store = store
        self.where = store.where
        self.dialect = store.dialect

    @contextmanager
    def read(self) -> Iterator:
        from sqlalchemy import text

        with self.store.read() as session:
            yield lambda sql, params: [tuple(r) for r in session.execute(text(sql), params)]

    def close(self) -> None:
        self.store.close()


def explain(err: Exception, where: str) -> StoreUnavailable:
    """A sqlite3 error as advice a person can act on."""
    detail = (str(err).strip().splitlines() or [repr(err)])[0]
    lowered = detail.lower()
    if "not a database" in lowered or "no such table" in lowered or "no such column" in lowered:
        return StoreUnavailable(f"{where} is not a labelsd database (or it is damaged, or from "
                                "an older labelsd: start labelsd once to upgrade it); pass another --db")
    if "unable to open" in lowered:
        return StoreUnavailable(f"cannot open the database {where}; check its permissions "
                                "and its folder's")
    if "locked" in lowered or "busy" in lowered:
        return StoreUnavailable(f"the database {where} stayed locked by another process; try again")
    return StoreUnavailable(f"database error on {where}: {detail}")


def open_reader(db: str, default_db: str | None = None) -> Reader:
    """A read-only view of the library at a file path or URL. A SQLite file that
    does not exist is an error (StoreUnavailable naming the default database):
    a command that only reads creates nothing."""
    if "://" in db:
        from labelsd.store.engine import open_store

        return StoreReader(open_store(db))
    path = Path(db).expanduser()
    try:
        return _open_file(path, default_db)
    except PermissionError as err:  # a folder on the way does not let us in
        from labelsd.store.access import denied_advice

        raise StoreUnavailable(denied_advice(path)) from err


def _open_file(path: Path, default_db: str | None) -> Reader:
    if path.is_dir():
        raise StoreUnavailable(
            f"database {path} is a directory; give a file path such as {path / 'labels.db'}")
    if not path.exists():
        hint = (f" (the default one is {default_db})"
                if default_db and os.path.abspath(default_db) != os.path.abspath(path) else "")
        raise StoreUnavailable(f"no database at {path}{hint}; labelsd creates it when it "
                               "first starts, or pass --db")
    if not os.access(path, os.R_OK):
        raise PermissionError(13, "permission denied", str(path))
    return SqliteReader(path)


def as_reader(source) -> Reader:
    """A Reader for `source`: a Reader already, or a `Store`."""
    return source if isinstance(source, Reader) else StoreReader(source)


__all__ = ["Reader", "as_reader", "as_utc", "in_list", "load_records", "open_reader",
           "where_shown"]
