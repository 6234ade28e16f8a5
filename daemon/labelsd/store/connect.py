"""Opening a database: the SQLAlchemy engine for a SQLite file or a URL, the
SQLite settings, and driver errors turned into advice a person can act on.

On SQLite one connect hook sets the busy timeout, synchronous=NORMAL, foreign
keys and the WAL's checkpoint size (WAL_CHECKPOINT_PAGES) on every connection,
and a begin hook starts write transactions with BEGIN IMMEDIATE (reads with a
deferred BEGIN). WAL is switched on once per file
(`enable_wal`), not in the hook: the mode is stored in the file.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from labelsd.errors import StoreRejected, StoreUnavailable
from labelsd.fileio import no_room_beside
from labelsd.paths import shown
from labelsd.store.access import prepare_database_file, where_shown
from labelsd.store.faults import cannot_succeed

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30
# The committing connection copies the WAL back into the database (a checkpoint)
# once it holds this many pages (SQLite's default: 1,000, 4 MB). The writer's
# inserts land all over the library's B-trees; over a longer window a page it
# dirties again and again is copied back once. bench/fleet.py's stand-in writer,
# interleaved runs on one machine: 3,663 -> 4,743 images/s recorded. The WAL
# file stays about this size (40 MB at 4 kB pages) between checkpoints.
WAL_CHECKPOINT_PAGES = 10_000
# A node's connections to a database server: at most POOL_SIZE + POOL_OVERFLOW at
# once (claimer, writer, heartbeat, watcher intake, a walk, a metrics scrape use one
# each at most), plus the queue listener's own. N nodes need N x 9 of PostgreSQL's
# max_connections (default 100, 3 kept for superusers): 10 nodes fit the default.
POOL_SIZE = 4
POOL_OVERFLOW = 4
POOL_TIMEOUT_S = 30  # a thread waits this long for a free connection, then StoreUnavailable


def is_url(db: str) -> bool:
    return "://" in db


def sqlite_engine(db_path: str) -> Engine:
    path = Path(db_path).expanduser()
    prepare_database_file(path)  # owner only, or its folder's group; advice when refused
    engine = create_engine(
        f"sqlite:///{path.resolve()}",
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: sqlite3.Connection, _record) -> None:
        # We issue BEGIN ourselves (below), so pysqlite must not.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        write = conn.get_execution_options().get("labelsd_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def enable_wal(engine: Engine, where: str) -> None:
    """Put the file in WAL mode once (the mode is stored in the file, so every
    later connection has it). Not in the connect hook: switching needs the
    file to itself for a moment, and SQLite answers "locked" at once, without
    its busy timeout, when another process is in the file then (several
    processes opening a new database together). So: read the mode, and retry
    the switch until it sticks or the busy timeout has passed."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    wait = 0.01
    with engine.connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        while True:
            try:
                mode = dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]
                if mode.lower() == "wal":
                    return
                dbapi_conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise explain(err, where) from err
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"the database {where} stayed locked by another process; "
                        "try again") from err
                log.debug("database %s busy while enabling WAL; retrying", shown(where))
                time.sleep(wait)
                wait = min(wait * 2, 0.5)


def url_engine(url: str) -> Engine:
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE,
                             max_overflow=POOL_OVERFLOW, pool_timeout=POOL_TIMEOUT_S)
    except ImportError as err:
        raise StoreUnavailable(missing_driver(url, err)) from err
    except (SQLAlchemyError, ValueError) as err:
        raise StoreUnavailable(f"cannot use database URL {where_shown(url)!r}: {err}") from err


# The PostgreSQL driver labelsd is tested with: the `postgres` extra of pyproject.toml.
PSYCOPG = "psycopg[binary]>=3.1"


def missing_driver(url: str, err: ImportError) -> str:
    """What to install (into the Python that runs labelsd) when a URL's driver is not there."""
    import shlex
    import sys

    shown = where_shown(url)
    install = (f"{shlex.quote(sys.executable)} -m pip install '{PSYCOPG}' (from a labelsd "
               "checkout, `make install EXTRAS=postgres` installs the commands with it)")
    if err.name == "psycopg":
        return f"cannot use {shown}: the PostgreSQL driver psycopg is not installed; install it: {install}"
    if err.name == "psycopg2":
        return (f"cannot use {shown}: that URL asks for psycopg2; labelsd uses psycopg 3: write "
                "postgresql+psycopg://... (and if psycopg is missing too, install it: "
                f"{install})")
    return f"cannot use {shown}: its database driver is not installed ({err})"


def explain(err: Exception, where: str) -> StoreUnavailable | StoreRejected:
    """Turn a driver error into advice a person can act on: StoreUnavailable for an
    outage (retried), StoreRejected for a statement no retry can cure."""
    detail = str(getattr(err, "orig", err)).strip().splitlines()[0] if str(err) else repr(err)
    if cannot_succeed(err):
        return StoreRejected(f"the database {where} refused it: {detail}")
    lowered = detail.lower()
    if "not a database" in lowered:
        advice = f"{where} is not a labelsd database (or it is damaged); pass another --db"
    elif "readonly" in lowered or "read-only" in lowered:
        advice = f"the database {where} is read-only; check its permissions and its folder's"
    elif ("disk is full" in lowered or "no space left" in lowered or "could not extend" in lowered
          or ("disk i/o error" in lowered and not is_url(where) and no_room_beside(where))):
        advice = (f"the disk holding the database {where} is full; free some space "
                  "(nothing is lost: writes are retried)")
    elif "disk i/o error" in lowered:
        advice = f"the disk holding the database {where} failed to read or write (disk I/O error)"
    elif "unable to open" in lowered:
        advice = (f"cannot open the database {where}; check that its folder exists and is "
                  "writable")
    elif any(word in lowered for word in ("locked", "busy", "deadlock", "could not serialize")):
        advice = f"the database {where} stayed locked by another process; try again"
    else:
        advice = f"database error on {where}: {detail}"
    return StoreUnavailable(advice)


__all__ = ["SQLITE_BUSY_TIMEOUT_S", "WAL_CHECKPOINT_PAGES", "enable_wal", "explain", "is_url", "sqlite_engine",
           "url_engine"]
