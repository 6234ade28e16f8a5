"""The store: one database (SQLite or PostgreSQL, opened by connect.py), short
explicit transactions, and reading image records (with recordsql's SQL).

Writes go through `Store.write()`, reads through `Store.read()`; each is one
transaction. On SQLite write transactions start with BEGIN IMMEDIATE so two
writers queue on the busy timeout instead of failing half-way (connect.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from labelsd.errors import NotTracked, StoreUnavailable
from labelsd.paths import canonical_path
from labelsd.store import migrations, recordsql
from labelsd.store.access import require_database_file, where_shown
from labelsd.store.connect import POOL_TIMEOUT_S, enable_wal, explain, is_url, sqlite_engine, url_engine
from labelsd.store.schema import TrackedPath

log = logging.getLogger(__name__)

# The most values in one `IN (...)` list or one multi-row write (see recordsql.CHUNK).
CHUNK = recordsql.CHUNK


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


class Store(recordsql.RecordReads):
    """One database. Thread-safe: every transaction takes its own connection."""

    def __init__(self, db: str, *, migrate: bool = True, create: bool = True,
                 default_db: str | None = None):
        self.db = db
        # how messages and logs name it: a URL without its password
        self.where = where_shown(db) if is_url(db) else str(Path(db).expanduser())
        if not create and not is_url(db):
            require_database_file(Path(self.where), default_db)
        self.engine = url_engine(db) if is_url(db) else sqlite_engine(db)
        self._write_engine = self.engine.execution_options(labelsd_write=True)
        try:
            if not create:
                self._require_library()
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

    def _require_library(self) -> None:
        """An existing library has recorded migrations; an empty file or an empty
        database on a server is not one, and is not made one here."""
        with self.engine.connect() as conn:
            if migrations.applied_versions(conn):
                return
        if is_url(self.db):
            raise StoreUnavailable(
                f"no labelsd library in {self.where}; labelsd creates one when it "
                "first starts (or labels db copy --to fills it), or pass another --db")
        raise StoreUnavailable(f"{self.where} is not a labelsd database (it is empty); "
                               "pass another --db")

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

    # ---- records (the SQL and the assembly: recordsql, shared with serve/reader.py) ----

    @contextmanager
    def rows(self) -> Iterator[recordsql.Run]:
        """One read transaction as `run(sql, params) -> row tuples`: what the record
        reads (`record`, `records`, `records_for_paths`: recordsql.RecordReads) run."""
        with self.read() as session:
            yield lambda sql, params: [tuple(r) for r in session.execute(text(sql), params)]

    def require_content(self, session: Session, path: str) -> TrackedPath:
        """The tracked path row for `path` that has a content, or NotTracked."""
        row = session.scalar(select(TrackedPath).where(TrackedPath.path == canonical_path(path)))
        if row is None:
            raise NotTracked(f"{canonical_path(path)} is not tracked by labelsd")
        if row.sha256 is None:
            raise NotTracked(
                f"{row.path} has not been read yet; try again once `labels show` says done")
        return row

    def counts(self) -> dict[str, int]:
        """How many tracked paths are in each status (all four keys present),
        counting every path (store/counters.py keeps the same numbers cheaply)."""
        with self.rows() as run:
            return recordsql.full_counts(run)


def open_store(db: str, *, migrate: bool = True, create: bool = True,
               default_db: str | None = None) -> Store:
    """Open the database at a file path or SQLAlchemy URL, migrated to the current
    schema. `create` (the service, `labels scan`, `labels db copy`'s target) makes
    a new library where there is none; without it a missing SQLite file, or a
    database holding no library, is StoreUnavailable (naming `default_db`)."""
    return Store(db, migrate=migrate, create=create, default_db=default_db)
