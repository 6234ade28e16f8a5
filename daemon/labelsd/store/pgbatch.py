"""The fleet's hot statements on PostgreSQL, run through the driver (psycopg)
itself: claiming a batch, a batch's lookups, and its multi-row writes.

Measured on the writer's path (bench/fleet.py), SQLAlchemy's own work per
statement (building it, its cache key, the execution context, result rows)
cost more than the server spent on the statement, and a batch has about ten.
Here each statement is plain SQL text built once, its values passed as one
array per column (`unnest`), so psycopg prepares it once per connection; the
lookups of a batch go out together in one pipeline (one round trip). SQLite
keeps the SQLAlchemy statements (it has no round trips, and met its goal).

Every function runs on the connection of the caller's Session, inside its
transaction; a driver error is raised as SQLAlchemy's, so `Store`'s error
boundary turns it into advice (StoreUnavailable) as for any other statement.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import String, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


def is_pg(session: Session) -> bool:
    return session.bind.dialect.name == "postgresql"


class _Driver:
    """The psycopg connection of a session's transaction. `execute` also tells
    the engine's `before_cursor_execute` listeners (the statement counts of
    tests and of bench/fleet.py see these statements as any other)."""

    def __init__(self, session: Session):
        self.sa_conn = session.connection()
        self.conn = self.sa_conn.connection.driver_connection

    def execute(self, sql: str, params=None, *, prepare: bool | None = None):
        for listener in self.sa_conn.dispatch.before_cursor_execute:
            listener(self.sa_conn, None, sql, params, None, False)
        return self.conn.execute(sql, params, prepare=prepare)

    def pipeline(self):
        return self.conn.pipeline()


@contextmanager
def _driver(session: Session) -> Iterator[_Driver]:
    """A session's driver connection; its errors come out as SQLAlchemy's
    DBAPIError family (OperationalError ...), with `.orig`, as from SQLAlchemy."""
    import psycopg

    try:
        yield _Driver(session)
    except psycopg.Error as err:
        raise DBAPIError.instance("(labelsd batch statement)", None, err, psycopg.Error) from err


# The pick walks the partial index of queued rows in id order and stops after
# `limit` rows it could lock. Bitmap and sequential scans are switched off for
# this one transaction: with statistics older than a burst of enqueues (the
# first minute after a walk queued 200,000 files, before autovacuum analyzes),
# the planner otherwise expects a handful of queued rows and reads and sorts
# all of them on every claim (85 ms at 200,000 rows instead of 0.5 ms).
# And the claim's commit does not wait for its WAL to reach the disk: a claim
# lost in a server crash leaves its rows unclaimed, to be claimed again, and the
# batch's results (committed synchronously) are idempotent per content. A node
# that survives the crash finds its claims at worst taken over: work done twice,
# never lost (the same as after a lease ran out).
CLAIM_PLANNER_SQL = ("SELECT set_config('enable_bitmapscan', 'off', true), "
                     "set_config('enable_seqscan', 'off', true), "
                     "set_config('synchronous_commit', 'off', true)")
CLAIM_SQL = (
    "WITH picked AS (SELECT id FROM queue WHERE state = 'queued' "
    "AND (not_before IS NULL OR not_before <= %(now)s) "
    "AND (claimed_by IS NULL OR claimed_at < %(stale)s) "
    "ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "UPDATE queue AS q SET claimed_by = %(node)s, claimed_at = %(now)s FROM picked "
    "WHERE q.id = picked.id RETURNING q.id, q.path, q.enqueued_at, q.attempts")


def claim(session: Session, node_id: str, limit: int, now: datetime,
          lease: timedelta) -> list[tuple]:
    """workqueue.claim's statement: (id, path, enqueued_at, attempts) rows."""
    with _driver(session) as conn:
        with conn.pipeline():
            conn.execute(CLAIM_PLANNER_SQL)
            cur = conn.execute(CLAIM_SQL, {"now": now, "stale": now - lease, "limit": limit,
                                           "node": node_id})
        return cur.fetchall()


# The lookups and the delete join the batch's keys (unnest: the planner knows
# their number) to the table, planned afresh each time (prepare=False): a plan
# prepared while a table was small (the first batches of a new library, no
# statistics yet) is a sequential scan, and would be kept while the table grows
# to millions of rows; `col = ANY(keys)` without statistics is guessed to match
# a sixth of the table, a scan again. Planning takes microseconds; a scan, ms.

def lookups(session: Session, shas: list[str], paths: list[str],
            ids: list[int]) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """A batch's three lookups in one round trip: the (sha256, status, model) of
    its known contents, the (path, sha256, missing) of its paths, and the
    (id, path) of its queue rows still standing."""
    with _driver(session) as conn:
        with conn.pipeline():
            known = conn.execute("SELECT c.sha256, c.status, c.model FROM unnest(%b::text[]) AS k(v) "
                                 "JOIN contents AS c ON c.sha256 = k.v", [shas], prepare=False)
            before = conn.execute("SELECT p.path, p.sha256, p.missing FROM unnest(%b::text[]) AS k(v) "
                                  "JOIN paths AS p ON p.path = k.v", [paths], prepare=False)
            live = conn.execute("SELECT q.id, q.path FROM unnest(%b::bigint[]) AS k(v) "
                                "JOIN queue AS q ON q.id = k.v",
                                [ids], prepare=False)
        return known.fetchall(), before.fetchall(), live.fetchall()


@lru_cache(maxsize=64)
def _insert_sql(table: Table, names: tuple[str, ...], tail: str) -> str:
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()

    def array_type(column) -> str:
        # Text arrays, not VARCHAR(64)[]: an explicit cast to a length truncates
        # silently, where storing text into the column refuses a value too long.
        if isinstance(column.type, String):
            return "text[]"
        return f"{column.type.compile(dialect=dialect)}[]"

    arrays = ", ".join(f"%({name})b::{array_type(table.c[name])}" for name in names)
    return (f"INSERT INTO {table.name} ({', '.join(names)}) "
            f"SELECT * FROM unnest({arrays}) {tail}")


def upsert_sql(conflict: Sequence[str], update: Sequence[str] = (), where: str = "") -> str:
    """The ON CONFLICT tail: do nothing, or set `update` from the new row (`where`:
    a condition on the stored row, which may use the parameter %(where)s)."""
    target = f"ON CONFLICT ({', '.join(conflict)})"
    if not update:
        return f"{target} DO NOTHING"
    sets = ", ".join(f"{name} = excluded.{name}" for name in update)
    return f"{target} DO UPDATE SET {sets}" + (f" WHERE {where}" if where else "")


def insert_rows(session: Session, table: Table, rows: list[dict], tail: str,
                where_param=None) -> None:
    """One INSERT ... SELECT * FROM unnest(one array per column) `tail` for all
    `rows` (dicts with the same keys): the same SQL text whatever their number."""
    if not rows:
        return
    names = tuple(rows[0])
    params = {name: [row[name] for row in rows] for name in names}
    if where_param is not None:
        params["where"] = where_param
    with _driver(session) as conn:
        conn.execute(_insert_sql(table, names, tail), params)


def delete_claims(session: Session, ids: list[int], stamps: list[datetime]) -> int:
    """Delete the queue rows whose (id, enqueued_at) are given; how many went."""
    with _driver(session) as conn:
        return conn.execute(
            "DELETE FROM queue AS q USING unnest(%b::bigint[], %b::timestamptz[]) AS d(id, at) "
            "WHERE q.id = d.id AND q.enqueued_at = d.at", [ids, stamps], prepare=False).rowcount


__all__ = ["claim", "delete_claims", "insert_rows", "is_pg", "lookups", "upsert_sql"]
