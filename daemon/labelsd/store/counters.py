"""Status counts without counting the library: what the heartbeat, `systemctl
status` and `labels status` show costs the same at ten images and at ten million.

Triggers (migration 4) keep `counters` exact as rows come and go: queue rows
by state, tracked paths, missing paths. What they cannot see (a path's status
also depends on its content) is read through partial indexes that hold only the
outstanding work: contents not `done`, paths never read. A full count
(`Store.counts()`) stays the reference; tests hold the two equal.

The SQL is plain text in the dialect both databases share, run through any
`run(sql, params) -> rows`: the service's Store (`status_counts`) and the query
commands' read-only Reader (serve/reader.py, no SQLAlchemy) use the same rule.
This module imports no SQLAlchemy at load for that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Run = Callable[[str, dict], list]

TOTALS_SQL = "SELECT name, sum(n) FROM counters GROUP BY name"
QUEUE_DEPTH_SQL = "SELECT coalesce(sum(n), 0) FROM counters WHERE name = 'queue:queued'"
_UNQUEUED = "NOT p.missing AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.path = p.path)"
# Content first: the sub-select walks the partial index of contents not done
# ('done' written as a literal, so the index applies) and finds their paths by
# index; a join lets SQLite's planner scan every path instead.
_BY_CONTENT_SQL = ("SELECT count(*) FROM paths p WHERE p.sha256 IN (SELECT sha256 FROM contents "
                   "WHERE status <> 'done' AND status = '{status}') AND " + _UNQUEUED)
NEVER_READ_SQL = "SELECT count(*) FROM paths p WHERE p.sha256 IS NULL AND " + _UNQUEUED


def counted_statuses(run: Run) -> dict[str, int]:
    """pending, done, failed and missing paths, from the counters and the
    outstanding work (the same numbers as a full count)."""
    totals = {name: int(n or 0) for name, n in run(TOTALS_SQL, {})}
    failed_content = run(_BY_CONTENT_SQL.format(status="failed"), {})[0][0]
    pending_content = run(_BY_CONTENT_SQL.format(status="pending"), {})[0][0]
    never_read = run(NEVER_READ_SQL, {})[0][0]
    missing = totals.get("paths:missing", 0)
    failed = totals.get("queue:failed", 0) + failed_content
    pending = totals.get("queue:queued", 0) + never_read + pending_content
    done = totals.get("paths", 0) - missing - failed - pending
    return {"pending": pending, "done": done, "failed": failed, "missing": missing}


def _run_in(session) -> Run:
    from sqlalchemy import text

    return lambda sql, params: session.execute(text(sql), params).all()


def status_counts(store) -> dict[str, int]:
    """counted_statuses() through a Store, in one read transaction."""
    with store.read() as session:
        return counted_statuses(_run_in(session))


def queue_depth(store) -> int:
    """Rows waiting in the queue (claimed or not, in back-off or not)."""
    with store.read() as session:
        return int(_run_in(session)(QUEUE_DEPTH_SQL, {})[0][0])


def shards(store) -> int:
    """How many counter rows there are (tests: the writes spread over shards)."""
    with store.read() as session:
        return int(_run_in(session)("SELECT count(*) FROM counters", {})[0][0])


__all__ = ["counted_statuses", "queue_depth", "shards", "status_counts"]
