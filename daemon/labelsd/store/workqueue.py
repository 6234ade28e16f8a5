"""The durable work queue: which paths wait to be read, and who holds them.

A path enters the queue (`enqueue`) before anything else happens to it, so a
crash loses nothing. Workers `claim` rows (FOR UPDATE SKIP LOCKED on PostgreSQL,
BEGIN IMMEDIATE on SQLite); `claimable` is the one rule for which rows may be
taken. A claim carries the row's `enqueued_at`: if the file changed again while
it was being read, the row was re-stamped and `finish_claims` releases it for
another pass instead of deleting it, so the newest bytes always win. Claims
older than the lease (a dead node's) are taken over. What a finished claim
changes in the library (contents, paths, tags) is `contents.py`'s job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, literal_column, or_, select, text, tuple_, update
from sqlalchemy.orm import Session

from labelsd.paths import canonical_path, shown
from labelsd.records import Claim, FileFacts, Outcome
from labelsd.store import counters, pgbatch
from labelsd.store.engine import CHUNK, Store, dialect_insert, write_rows
from labelsd.store.schema import Content, QueueItem, TrackedPath, as_utc, utcnow

log = logging.getLogger(__name__)

# How long a claim protects a row: a live node renews its claims well within it;
# a dead node's rows are taken over after it. LABELS_CLAIM_LEASE_S overrides it
# (tests use a short lease to watch a killed node's work being taken over).
CLAIM_LEASE = timedelta(seconds=float(os.environ.get("LABELS_CLAIM_LEASE_S") or 60))
MAX_ATTEMPTS = 5
QUEUE_CHANNEL = "labelsd_queue"  # PostgreSQL NOTIFY channel: "work was queued"


def enqueue(store: Store, files: Iterable[FileFacts | str], *, force: bool = False) -> int:
    """Put paths in the queue (and track them as pending). A path whose size and
    mtime match what was last read there, and whose content is settled, is
    skipped unless `force`. Returns how many paths were queued or re-stamped.

    A burst costs a few statements per CHUNK paths (one lookup, then multi-row
    upserts), whatever its size, and wakes the other nodes once (`notify_queued`)."""
    by_path = {}
    for f in files:
        f = f if isinstance(f, FileFacts) else FileFacts(f)
        by_path[canonical_path(f.path)] = f  # the newest facts of a path seen twice win
    # Sorted: concurrent enqueuers (nodes watching one shared folder) then lock
    # rows in one order, which keeps PostgreSQL deadlocks between them rare.
    facts = [FileFacts(path, f.size, f.mtime_ns) for path, f in sorted(by_path.items())]
    if not facts:
        return 0
    now = utcnow()
    queued = 0
    with store.write() as session:
        for start in range(0, len(facts), CHUNK):
            queued += _enqueue_chunk(session, facts[start:start + CHUNK], now, force)
        if queued:
            notify_queued(session)
    return queued


def _enqueue_chunk(session: Session, part: list[FileFacts], now: datetime, force: bool) -> int:
    known = {row.path: row for row in session.execute(
        select(TrackedPath.path, TrackedPath.sha256, TrackedPath.size,
               TrackedPath.mtime_ns, TrackedPath.missing, Content.status)
        .outerjoin(Content, Content.sha256 == TrackedPath.sha256)
        .where(TrackedPath.path.in_([f.path for f in part])))}
    back, cut_loose, wanted = [], [], []
    for f in part:
        row = known.get(f.path)
        if (not force and row is not None and row.sha256 is not None
                and f.size is not None and row.size == f.size
                and row.mtime_ns == f.mtime_ns and row.status in ("done", "failed")):
            if row.missing:  # back where it was, unchanged
                back.append(f.path)
            continue
        if row is not None and row.missing and row.sha256 is not None:
            # A file again where one was deleted, but not the same file: a new
            # photo under an old name, pending until read (and given no tags).
            cut_loose.append(f.path)
        wanted.append(f.path)
    paths, queue = TrackedPath.__table__, QueueItem.__table__
    if back:
        session.execute(update(paths).where(paths.c.path.in_(back))
                        .values(missing=False, last_seen=now))
    if cut_loose:
        session.execute(update(paths).where(paths.c.path.in_(cut_loose))
                        .values(sha256=None, size=None, mtime_ns=None))
    if not wanted:
        return 0
    insert_paths = dialect_insert(session, paths)
    write_rows(session, insert_paths.on_conflict_do_update(index_elements=["path"], set_={
        "missing": False, "last_seen": insert_paths.excluded.last_seen}),
        [{"path": path, "first_seen": now, "last_seen": now, "missing": False} for path in wanted])
    insert_queue = dialect_insert(session, queue)
    write_rows(session, insert_queue.on_conflict_do_update(index_elements=["path"], set_={
        "state": "queued", "enqueued_at": insert_queue.excluded.enqueued_at, "attempts": 0,
        "last_error": None, "not_before": None}),
        [{"path": path, "state": "queued", "enqueued_at": now, "attempts": 0} for path in wanted])
    return len(wanted)


def notify_queued(session: Session) -> None:
    """Wake the idle nodes (PostgreSQL LISTEN/NOTIFY, delivered at commit). Once per
    transaction, never per row: NOTIFY takes a database-wide lock at commit, and
    PostgreSQL folds identical notifications of one transaction into one anyway.
    On SQLite there is one machine; its own pipeline is woken in-process."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {QUEUE_CHANNEL}"))


def claimable(now: datetime, lease: timedelta = CLAIM_LEASE) -> tuple:
    """THE rule for which queue rows a node may take (claim, and the pipeline's
    idleness check, use it): queued, past its back-off, and not claimed, or
    claimed longer than `lease` ago by a node that stopped renewing (a dead one).
    'queued' is written as a literal, not a parameter: only then may PostgreSQL (in
    a generic plan too) and SQLite use the partial index of queued rows."""
    q = QueueItem.__table__.c
    return (q.state == literal_column("'queued'"),
            or_(q.not_before.is_(None), q.not_before <= now),
            or_(q.claimed_by.is_(None), q.claimed_at < now - lease))


def reserved(owner: str, now: datetime) -> tuple:
    """The rows a scan reserved (`reserve`) that its pipeline may take now."""
    q = QueueItem.__table__.c
    return (q.state == literal_column("'queued'"), q.claimed_by == owner,
            or_(q.not_before.is_(None), q.not_before <= now))


def reserve(store: Store, owner: str, under: str, lease: timedelta = CLAIM_LEASE) -> int:
    """Claim for `owner` (a `labels scan`) every queued row under the folder `under`
    that no live node holds, so that no service takes them while the scan renews
    them (`renew_claims(store, owner)`); its pipeline takes them with
    `claim(..., reserved_by=owner)`. How many rows."""
    now = utcnow()
    q = QueueItem.__table__.c
    with store.write() as session:
        return session.execute(update(QueueItem).where(
            q.state == literal_column("'queued'"), q.path.startswith(under.rstrip("/") + "/", autoescape=True),
            or_(q.claimed_by.is_(None), q.claimed_at < now - lease))
            .values(claimed_by=owner, claimed_at=now)).rowcount


def claim(store: Store, node_id: str, limit: int, lease: timedelta = CLAIM_LEASE, *,
          reserved_by: str | None = None) -> list[Claim]:
    """Atomically take up to `limit` queued paths for this node, oldest first.
    Rows claimed by another node more than `lease` ago are taken over. One
    statement: an UPDATE of the rows a locking sub-select picks (FOR UPDATE SKIP
    LOCKED on PostgreSQL; SQLite's write transaction is the lock), RETURNING them.
    The pick is a CTE, which PostgreSQL runs once (one with row locks is never
    folded into the UPDATE), so the LIMIT holds. `reserved_by`: only the rows
    `reserve` gave that owner (a scan's pipeline)."""
    now = utcnow()
    with store.write() as session:
        if pgbatch.is_pg(session) and reserved_by is None:  # the driver, the planner kept on the index
            rows = pgbatch.claim(session, node_id, limit, now, lease)
        else:
            queue = QueueItem.__table__
            which = claimable(now, lease) if reserved_by is None else reserved(reserved_by, now)
            picked = (select(queue.c.id).where(*which)
                      .order_by(queue.c.id).limit(limit).with_for_update(skip_locked=True)
                      .cte("picked"))
            rows = session.execute(
                update(queue).where(queue.c.id == picked.c.id)
                .values(claimed_by=node_id, claimed_at=now)
                .returning(queue.c.id, queue.c.path, queue.c.enqueued_at,
                           queue.c.attempts)).all()
    return [Claim(id_, path, as_utc(at), attempts)
            for id_, path, at, attempts in sorted(rows, key=lambda r: r[0])]


def has_claimable(store: Store, reserved_by: str | None = None) -> bool:
    """Whether any row is claimable now (an index probe, not a count of the queue);
    `reserved_by`: any of that owner's reserved rows."""
    now = utcnow()
    which = claimable(now) if reserved_by is None else reserved(reserved_by, now)
    with store.read() as session:
        return session.scalar(select(QueueItem.id).where(*which).limit(1)) is not None


def renew_claims(store: Store, node_id: str) -> None:
    """Keep this node's claims from being taken over while it is alive. The
    pipeline, which holds the claims, is the one caller (every RENEW_EVERY_S)."""
    with store.write() as session:
        session.execute(update(QueueItem).where(QueueItem.claimed_by == node_id)
                        .values(claimed_at=utcnow()))


def release_claims(store: Store, node_id: str, ids: Sequence[int] | None = None) -> None:
    """Hand claimed (or reserved) rows back to the queue (shutdown with work in hand)."""
    with store.write() as session:
        stmt = update(QueueItem).where(QueueItem.claimed_by == node_id)
        if ids is not None:
            stmt = stmt.where(QueueItem.id.in_(list(ids)))
        if session.execute(stmt.values(claimed_by=None, claimed_at=None)).rowcount:
            notify_queued(session)


def finish_claims(session: Session, claims: Sequence[Claim], node_id: str) -> None:
    """Delete the batch's queue rows, except those re-queued while they were read
    (their `enqueued_at` moved on): those are released for another pass. Two
    statements whatever the batch's size."""
    ids = [c.id for c in claims]
    if pgbatch.is_pg(session):
        gone = pgbatch.delete_claims(session, ids, [c.enqueued_at for c in claims])
    else:
        gone = _delete_claims(session, claims)
    if gone < len(ids):
        for start in range(0, len(ids), CHUNK):
            session.execute(update(QueueItem).where(QueueItem.id.in_(ids[start:start + CHUNK]),
                                                    QueueItem.claimed_by == node_id)
                            .values(claimed_by=None, claimed_at=None))


def _delete_claims(session: Session, claims: Sequence[Claim]) -> int:
    gone = 0
    for start in range(0, len(claims), CHUNK):
        part = claims[start:start + CHUNK]
        gone += session.execute(delete(QueueItem).where(tuple_(QueueItem.id, QueueItem.enqueued_at).in_(
            [(c.id, c.enqueued_at) for c in part]))).rowcount
    return gone


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
        log.warning("giving up on %s after %d attempts: %s", shown(o.claim.path), attempts, o.error)
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
        if failed_rows or paths:
            notify_queued(session)
    return failed_rows + len(paths)


def queue_depth(store: Store) -> int:
    """Rows waiting in the queue, from the counters (no count of the queue)."""
    return counters.queue_depth(store)
