"""Status counts without counting the library: what the heartbeat and `labels
status` show costs the same at ten images and at ten million.

Triggers (migration 4) keep `counters` exact as rows come and go: queue rows
by state, tracked paths, missing paths. What they cannot see (a path's status
also depends on its content) is read through partial indexes that hold only the
outstanding work: contents not `done`, paths never read. `Store.counts()`
stays the reference (a full count, for `labels stats`); tests hold the two equal.
"""

from __future__ import annotations

import logging

from sqlalchemy import Column, MetaData, String, Table, and_, func, literal_column, select
from sqlalchemy.orm import Session

from labelsd.store.engine import Store
from labelsd.store.schema import Content, QueueItem, TrackedPath

log = logging.getLogger(__name__)

counters = Table("counters", MetaData(), Column("name", String(40)), Column("shard"), Column("n"))


def totals(session: Session) -> dict[str, int]:
    """Every counter, summed over its shards."""
    return {name: int(n or 0) for name, n in session.execute(
        select(counters.c.name, func.sum(counters.c.n)).group_by(counters.c.name))}


def queue_depth(store: Store) -> int:
    """Rows waiting in the queue (claimed or not, in back-off or not)."""
    with store.read() as session:
        return int(session.scalar(select(func.coalesce(func.sum(counters.c.n), 0))
                                  .where(counters.c.name == "queue:queued")))


def status_counts(store: Store) -> dict[str, int]:
    """How many tracked paths are pending, done, failed and missing: the same
    numbers as `Store.counts()`, read from counters and the outstanding work."""
    unqueued = ~select(QueueItem.id).where(QueueItem.path == TrackedPath.path).exists()
    with store.read() as session:
        c = totals(session)
        # Paths whose content is not done, content first: the sub-select walks the
        # partial index of contents not done ('done' a literal, so the index
        # applies), and each of its rows finds its paths by index; a join would let
        # SQLite's planner scan every path instead.
        by_content = {status: session.scalar(
            select(func.count()).select_from(TrackedPath).where(
                TrackedPath.sha256.in_(select(Content.sha256).where(
                    Content.status != literal_column("'done'"),
                    Content.status == literal_column(f"'{status}'"))),
                TrackedPath.missing.is_(False), unqueued)) for status in ("failed", "pending")}
        never_read = session.scalar(select(func.count()).select_from(TrackedPath).where(
            and_(TrackedPath.sha256.is_(None), TrackedPath.missing.is_(False), unqueued)))
    missing = c.get("paths:missing", 0)
    failed = c.get("queue:failed", 0) + by_content.get("failed", 0)
    pending = (c.get("queue:queued", 0) + never_read
               + sum(n for status, n in by_content.items() if status != "failed"))
    done = c.get("paths", 0) - missing - failed - pending
    return {"pending": pending, "done": done, "failed": failed, "missing": missing}


__all__ = ["queue_depth", "status_counts", "totals"]
