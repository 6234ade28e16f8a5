"""The durable work queue: which paths wait to be read, and who holds them.

A path enters the queue (`enqueue`) before anything else happens to it, so a
crash loses nothing. Workers `claim` rows (FOR UPDATE SKIP LOCKED on PostgreSQL,
BEGIN IMMEDIATE on SQLite); `claimable` is the one rule for which rows may be
taken. A claim carries the row's `enqueued_at`: if the file changed again while
it was being read, the row was re-stamped and `finish_claim` releases it for
another pass instead of deleting it, so the newest bytes always win. Claims
older than the lease (a dead node's) are taken over. What a finished claim
changes in the library (contents, paths, tags) is `contents.py`'s job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from labelsd.paths import canonical_path
from labelsd.records import Claim, FileFacts, Outcome
from labelsd.store.engine import Store, dialect_insert
from labelsd.store.schema import Content, QueueItem, TrackedPath, as_utc, utcnow

log = logging.getLogger(__name__)

# How long a claim protects a row: a live node renews its claims well within it;
# a dead node's rows are taken over after it. LABELS_CLAIM_LEASE_S overrides it
# (tests use a short lease to watch a killed node's work being taken over).
CLAIM_LEASE = timedelta(seconds=float(os.environ.get("LABELS_CLAIM_LEASE_S") or 60))
MAX_ATTEMPTS = 5


def enqueue(store: Store, files: Iterable[FileFacts | str], *, force: bool = False) -> int:
    """Put paths in the queue (and track them as pending). A path whose size and
    mtime match what was last read there, and whose content is settled, is
    skipped unless `force`. Returns how many paths were queued or re-stamped."""
    facts = [f if isinstance(f, FileFacts) else FileFacts(f) for f in files]
    # Sorted: concurrent enqueuers (nodes watching one shared folder) then lock
    # rows in one order, which keeps PostgreSQL deadlocks between them rare.
    facts = sorted((FileFacts(canonical_path(f.path), f.size, f.mtime_ns) for f in facts),
                   key=lambda f: f.path)
    if not facts:
        return 0
    now = utcnow()
    queued = 0
    with store.write() as session:
        for start in range(0, len(facts), 500):
            part = facts[start:start + 500]
            known = {row.path: row for row in session.execute(
                select(TrackedPath.path, TrackedPath.sha256, TrackedPath.size,
                       TrackedPath.mtime_ns, TrackedPath.missing, Content.status)
                .outerjoin(Content, Content.sha256 == TrackedPath.sha256)
                .where(TrackedPath.path.in_([f.path for f in part])))}
            for f in part:
                row = known.get(f.path)
                if (not force and row is not None and row.sha256 is not None
                        and f.size is not None and row.size == f.size
                        and row.mtime_ns == f.mtime_ns and row.status in ("done", "failed")):
                    if row.missing:  # back where it was, unchanged
                        session.execute(update(TrackedPath).where(TrackedPath.path == f.path)
                                        .values(missing=False, last_seen=now))
                    continue
                if row is not None and row.missing and row.sha256 is not None:
                    # A file again where one was deleted, but not the same file: a new
                    # photo under an old name, pending until read (and given no tags).
                    session.execute(update(TrackedPath).where(TrackedPath.path == f.path)
                                    .values(sha256=None, size=None, mtime_ns=None))
                session.execute(dialect_insert(session, TrackedPath).values(
                    path=f.path, first_seen=now, last_seen=now, missing=False,
                ).on_conflict_do_update(index_elements=["path"],
                                        set_={"missing": False, "last_seen": now}))
                session.execute(dialect_insert(session, QueueItem).values(
                    path=f.path, state="queued", enqueued_at=now, attempts=0,
                ).on_conflict_do_update(index_elements=["path"], set_={
                    "state": "queued", "enqueued_at": now, "attempts": 0,
                    "last_error": None, "not_before": None}))
                queued += 1
    return queued


def claim(store: Store, node_id: str, limit: int, lease: timedelta = CLAIM_LEASE) -> list[Claim]:
    """Atomically take up to `limit` queued paths for this node, oldest first.
    Rows claimed by another node more than `lease` ago are taken over."""
    now = utcnow()
    with store.write() as session:
        rows = session.execute(
            select(QueueItem.id, QueueItem.path, QueueItem.enqueued_at, QueueItem.attempts)
            .where(QueueItem.state == "queued",
                   or_(QueueItem.not_before.is_(None), QueueItem.not_before <= now),
                   or_(QueueItem.claimed_by.is_(None), QueueItem.claimed_at < now - lease))
            .order_by(QueueItem.id).limit(limit)
            .with_for_update(skip_locked=True)).all()
        if not rows:
            return []
        session.execute(update(QueueItem).where(QueueItem.id.in_([r.id for r in rows]))
                        .values(claimed_by=node_id, claimed_at=now))
    return [Claim(r.id, r.path, as_utc(r.enqueued_at), r.attempts) for r in rows]


def renew_claims(store: Store, node_id: str) -> None:
    """Keep this node's claims from being taken over while it is alive."""
    with store.write() as session:
        session.execute(update(QueueItem).where(QueueItem.claimed_by == node_id)
                        .values(claimed_at=utcnow()))


def release_claims(store: Store, node_id: str, ids: Sequence[int] | None = None) -> None:
    """Hand claimed rows back to the queue (shutdown with work in hand)."""
    with store.write() as session:
        stmt = update(QueueItem).where(QueueItem.claimed_by == node_id)
        if ids is not None:
            stmt = stmt.where(QueueItem.id.in_(list(ids)))
        session.execute(stmt.values(claimed_by=None, claimed_at=None))


def finish_claim(session: Session, c: Claim, node_id: str) -> None:
    """Delete the queue row, unless the file was re-queued while we read it."""
    gone = session.execute(delete(QueueItem).where(
        QueueItem.id == c.id, QueueItem.enqueued_at == c.enqueued_at)).rowcount
    if not gone:
        session.execute(update(QueueItem).where(QueueItem.id == c.id,
                                                QueueItem.claimed_by == node_id)
                        .values(claimed_by=None, claimed_at=None))


def release_moved(session: Session, c: Claim, node_id: str) -> None:
    """The claimed file was renamed while it was read: its row, now at the new
    path (or gone with a deleted file), goes back to the queue for that path."""
    session.execute(update(QueueItem).where(QueueItem.id == c.id,
                                            QueueItem.claimed_by == node_id)
                    .values(claimed_by=None, claimed_at=None))


def retry_later(session: Session, o: Outcome, now: datetime) -> None:
    """A transient failure: back off exponentially, or give up after MAX_ATTEMPTS."""
    attempts = o.claim.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        values = {"state": "failed", "last_error": o.error, "attempts": attempts,
                  "claimed_by": None, "claimed_at": None}
        log.warning("giving up on %s after %d attempts: %s", o.claim.path, attempts, o.error)
    else:
        values = {"attempts": attempts, "last_error": o.error, "claimed_by": None,
                  "claimed_at": None, "not_before": now + timedelta(seconds=2 ** attempts)}
    session.execute(update(QueueItem).where(QueueItem.id == o.claim.id).values(**values))


def retry_failed(store: Store) -> int:
    """Queue failed images again (`labels retry`). Returns how many paths."""
    now = utcnow()
    with store.write() as session:
        failed_rows = session.execute(update(QueueItem).where(QueueItem.state == "failed")
                                      .values(state="queued", attempts=0, last_error=None,
                                              not_before=None, claimed_by=None,
                                              claimed_at=None, enqueued_at=now)).rowcount
        paths = session.scalars(
            select(TrackedPath.path).join(Content, Content.sha256 == TrackedPath.sha256)
            .where(Content.status == "failed", TrackedPath.missing.is_(False))).all()
        session.execute(update(Content).where(Content.status == "failed")
                        .values(status="pending", error=None))
        if paths:  # one multi-row insert, not a statement per path
            session.execute(
                dialect_insert(session, QueueItem).on_conflict_do_nothing(index_elements=["path"]),
                [{"path": path, "state": "queued", "enqueued_at": now, "attempts": 0}
                 for path in paths])
    return failed_rows + len(paths)


def queue_depth(store: Store) -> int:
    with store.read() as session:
        return session.query(QueueItem).filter(QueueItem.state == "queued").count()

