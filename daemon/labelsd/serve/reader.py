"""Read-only access to a library for the query commands, without SQLAlchemy on SQLite.

`labels search`, `show`, `list`, `stats`, `status`, `tags` and `export` only
read. On a SQLite file they open it with the standard library's sqlite3 in
read-only mode (`file:...?mode=ro`): nothing is created, nothing migrated, and
the command does not pay for importing SQLAlchemy (about half its start-up).
A URL (PostgreSQL) goes through the service's `Store`, as do callers that
already hold one (`as_reader(store)`).

The record SQL and the row-to-record assembly live once, in store/recordsql.py,
which the Store runs too (each on its own connection); tests check the two
readers agree.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from labelsd.errors import StoreRejected, StoreUnavailable
from labelsd.fileio import no_room_beside
from labelsd.paths import shown
from labelsd.store import recordsql
from labelsd.store.access import denied_advice, require_database_file, where_shown  # where_shown: re-exported
from labelsd.store.judgedsql import STAND_IN_SQL
from labelsd.store.recordsql import as_utc, in_list  # re-exported: the readers' helpers

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30


class Reader(recordsql.RecordReads):
    """A read-only view of one library. `read()` is one snapshot, yielding a
    function `run(sql, params) -> list of row tuples`; the records (`record`,
    `records`, `records_for_paths`) are read through it as the Store reads them."""

    where: str
    dialect: str

    @abstractmethod
    def read(self) -> AbstractContextManager:
        """One snapshot of the library (a context manager yielding `run`)."""

    def close(self) -> None:  # noqa: B027 - most readers hold nothing to close
        """Release what the reader holds (the sqlite3 reader's connection)."""

    def rows(self) -> AbstractContextManager:
        """The record reads' transaction (recordsql.RecordReads): `read()`."""
        return self.read()

    def counts(self) -> dict[str, int]:
        """Tracked paths in each status (all four keys present): from the counters
        the triggers keep (store/counters.py), the same cost at any library size;
        a full count for a library from before them (one not migrated since)."""
        from labelsd.store.counters import counted_statuses  # plain SQL, no SQLAlchemy

        try:
            with self.read() as run:
                return counted_statuses(run)
        except (StoreUnavailable, StoreRejected):  # no such table: SQLite says one, PostgreSQL the other
            log.debug("no counters in %s; counting every path", shown(self.where), exc_info=True)
        with self.read() as run:
            return recordsql.full_counts(run)


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
            if not self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                      "AND name = 'judgements'").fetchone():
                self._conn.execute(STAND_IN_SQL)  # a library from before migration 8
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
    if "disk i/o error" in lowered and no_room_beside(where):  # reading in WAL mode needs room too
        return StoreUnavailable(f"the disk holding the database {where} is full; free some space")
    return StoreUnavailable(f"database error on {where}: {detail}")


def open_reader(db: str, default_db: str | None = None) -> Reader:
    """A read-only view of the library at a file path or URL. A SQLite file that
    does not exist is an error (StoreUnavailable naming the default database),
    and so is a database server holding no library: a command that only reads
    creates nothing."""
    if "://" in db:
        from labelsd.store.engine import open_store

        return StoreReader(open_store(db, create=False))
    path = Path(db).expanduser()
    require_database_file(path, default_db)
    if not os.access(path, os.R_OK):
        raise StoreUnavailable(denied_advice(path))
    return SqliteReader(path)


def as_reader(source) -> Reader:
    """A Reader for `source`: a Reader already, or a `Store`."""
    return source if isinstance(source, Reader) else StoreReader(source)


__all__ = ["Reader", "as_reader", "as_utc", "in_list", "open_reader", "where_shown"]
