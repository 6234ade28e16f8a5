"""The durable work queue and everything that changes which content a path has.

A path enters the queue (`enqueue`) before anything else happens to it, so a
crash loses nothing. Workers `claim` rows (FOR UPDATE SKIP LOCKED on PostgreSQL,
BEGIN IMMEDIATE on SQLite), and the writer stores a whole batch of outcomes in
one transaction (`record_outcomes`). A claim carries the row's `enqueued_at`: if
the file changed again while it was being read, the row was re-stamped and is
released for another pass instead of being deleted, so the newest bytes always
win. Claims older than the lease (a dead node's) are taken over.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, literal, or_, select, update
from sqlalchemy.orm import Session

from .records import Prediction as PredictionRecord
from .schema import Content, Prediction, QueueItem, Tag, TrackedPath, as_utc, utcnow
from .store import Store, canonical_path, dialect_insert

log = logging.getLogger(__name__)

# How long a claim protects a row: a live node renews its claims well within it;
# a dead node's rows are taken over after it. LABELS_CLAIM_LEASE_S overrides it
# (tests use a short lease to watch a killed node's work being taken over).
CLAIM_LEASE = timedelta(seconds=float(os.environ.get("LABELS_CLAIM_LEASE_S") or 60))
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class FileFacts:
    """What a stat() says about a file; enough to tell 'unchanged' without reading it."""

    path: str
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Claim:
    id: int
    path: str
    enqueued_at: datetime
    attempts: int


@dataclass
class Outcome:
    """What happened to one claimed path. `kind` is one of:
    classified (model ran), linked (content already known), bad_image (content
    read but cannot be decoded), retry (transient error), vanished (file gone)."""

    claim: Claim
    kind: str
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None
    model: str | None = None
    predictions: list[PredictionRecord] = field(default_factory=list)


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


def content_status(store: Store, shas: Iterable[str]) -> dict[str, str]:
    """The stored status of each known content (done/failed/pending)."""
    wanted = list(set(shas))
    if not wanted:
        return {}
    with store.read() as session:
        return dict(session.execute(select(Content.sha256, Content.status)
                                    .where(Content.sha256.in_(wanted))).all())


def record_outcomes(store: Store, node_id: str, outcomes: Sequence[Outcome]) -> None:
    """Store a batch of outcomes in ONE transaction: contents, predictions,
    paths, and the queue rows done (or released, if re-stamped meanwhile)."""
    if not outcomes:
        return
    now = utcnow()
    with store.write() as session:
        # The batch's known contents in one query, not one per image.
        shas = {o.sha256 for o in outcomes if o.sha256}
        contents = {c.sha256: c for c in session.scalars(
            select(Content).where(Content.sha256.in_(shas)))} if shas else {}
        # What each path pointed at before, in one query too (a changed photo keeps its tags).
        before = {row.path: row for row in session.execute(
            select(TrackedPath.path, TrackedPath.sha256, TrackedPath.missing)
            .where(TrackedPath.path.in_([o.claim.path for o in outcomes])))}
        for o in outcomes:
            if o.kind in ("classified", "linked", "bad_image"):
                _store_content(session, o, now, contents)
                _point_path(session, o, now)
                _carry_tags(session, o.claim.path, before.get(o.claim.path), o.sha256)
                _finish_claim(session, o.claim, node_id)
            elif o.kind == "retry":
                _retry_later(session, o, now)
            elif o.kind == "vanished":
                _forget_vanished(session, o.claim, node_id, now)
            else:
                raise ValueError(f"unknown outcome kind {o.kind!r}")


def _store_content(session: Session, o: Outcome, now: datetime,
                   contents: dict[str, Content]) -> None:
    """Create or update the content of `o`; `contents` holds the batch's stored
    contents by SHA-256 and gains the ones created here."""
    existing = contents.get(o.sha256)
    if existing is not None and existing.status == "done":
        return  # classified already (by another path, node or an earlier run): keep it
    if o.kind == "linked" and existing is not None:
        return
    new = existing is None
    if new:
        existing = contents[o.sha256] = Content(sha256=o.sha256, size=o.size or 0)
        session.add(existing)
    existing.width, existing.height, existing.format = o.width, o.height, o.format
    if o.kind == "classified":
        existing.status, existing.error = "done", None
        existing.model, existing.classified_at = o.model, now
        if not new:  # a content that failed before may hold older predictions
            session.execute(delete(Prediction).where(Prediction.sha256 == o.sha256))
        session.flush()
        session.add_all(Prediction(sha256=o.sha256, rank=p.rank, model=o.model,
                                   class_index=p.class_index, wnid=p.wnid, label=p.label,
                                   score=float(p.score)) for p in o.predictions)
    else:
        existing.status, existing.error = "failed", o.error
    session.flush()


def _point_path(session: Session, o: Outcome, now: datetime) -> None:
    session.execute(dialect_insert(session, TrackedPath).values(
        path=o.claim.path, sha256=o.sha256, size=o.size, mtime_ns=o.mtime_ns,
        first_seen=now, last_seen=now, missing=False,
    ).on_conflict_do_update(index_elements=["path"], set_={
        "sha256": o.sha256, "size": o.size, "mtime_ns": o.mtime_ns,
        "last_seen": now, "missing": False}))


def _carry_tags(session: Session, path: str, was, new_sha: str | None) -> None:
    """The photo at `path` (whose row `was` read: sha256, missing) was replaced in
    place (rotated, cropped, keywords written into it by another app, or saved over
    through a rename): it is new content, classified anew, and the tags a person
    gave it carry over to the new version. Not when the path was missing: a new
    photo saved under a deleted one's name is another picture (`enqueue` also cuts
    such a path loose from its old content). The old content keeps its tags (a
    copy may still show it)."""
    if was is None or was.missing or was.sha256 in (None, new_sha) or new_sha is None:
        return
    old_sha = was.sha256
    carried = session.execute(
        dialect_insert(session, Tag).from_select(
            ["sha256", "tag_key", "tag", "created_at"],
            select(literal(new_sha), Tag.tag_key, Tag.tag, Tag.created_at)
            .where(Tag.sha256 == old_sha))
        .on_conflict_do_nothing(index_elements=["sha256", "tag_key"])).rowcount
    if carried:
        log.info("%s changed: %d tag(s) carried over to the new version", path, carried)


def _finish_claim(session: Session, c: Claim, node_id: str) -> None:
    """Delete the queue row, unless the file was re-queued while we read it."""
    gone = session.execute(delete(QueueItem).where(
        QueueItem.id == c.id, QueueItem.enqueued_at == c.enqueued_at)).rowcount
    if not gone:
        session.execute(update(QueueItem).where(QueueItem.id == c.id,
                                                QueueItem.claimed_by == node_id)
                        .values(claimed_by=None, claimed_at=None))


def _retry_later(session: Session, o: Outcome, now: datetime) -> None:
    attempts = o.claim.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        values = {"state": "failed", "last_error": o.error, "attempts": attempts,
                  "claimed_by": None, "claimed_at": None}
        log.warning("giving up on %s after %d attempts: %s", o.claim.path, attempts, o.error)
    else:
        values = {"attempts": attempts, "last_error": o.error, "claimed_by": None,
                  "claimed_at": None, "not_before": now + timedelta(seconds=2 ** attempts)}
    session.execute(update(QueueItem).where(QueueItem.id == o.claim.id).values(**values))


def _forget_vanished(session: Session, c: Claim, node_id: str, now: datetime) -> None:
    """The file went away before it was read: drop the queue row; a path never
    read is forgotten, a path that had content becomes missing."""
    gone = session.execute(delete(QueueItem).where(
        QueueItem.id == c.id, QueueItem.enqueued_at == c.enqueued_at)).rowcount
    if not gone:
        _finish_claim(session, c, node_id)
        return
    session.execute(delete(TrackedPath).where(TrackedPath.path == c.path,
                                              TrackedPath.sha256.is_(None)))
    session.execute(update(TrackedPath).where(TrackedPath.path == c.path)
                    .values(missing=True, last_seen=now))


def mark_missing(store: Store, paths: Iterable[str]) -> int:
    """Files deleted from a watched folder: keep their labels and tags, mark
    them missing, and drop any queue row (never-read paths are forgotten)."""
    wanted = [canonical_path(p) for p in paths]
    changed = 0
    with store.write() as session:
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            session.execute(delete(QueueItem).where(QueueItem.path.in_(part)))
            session.execute(delete(TrackedPath).where(TrackedPath.path.in_(part),
                                                      TrackedPath.sha256.is_(None)))
            changed += session.execute(
                update(TrackedPath).where(TrackedPath.path.in_(part),
                                          TrackedPath.missing.is_(False))
                .values(missing=True, last_seen=utcnow())).rowcount
    return changed


def mark_missing_under(store: Store, root: str, present: set[str]) -> int:
    """At start-up: every tracked path under `root` that is not in `present` is missing."""
    root = canonical_path(root).rstrip("/") + "/"
    with store.read() as session:
        tracked = session.scalars(select(TrackedPath.path).where(
            TrackedPath.path.startswith(root, autoescape=True),
            TrackedPath.missing.is_(False))).all()
    return mark_missing(store, [p for p in tracked if p not in present])


def move_path(store: Store, src: str, dest: str, facts: FileFacts | None = None) -> bool:
    """A file renamed or moved within the watched tree keeps its content (labels,
    tags) without being read again. Returns False when `src` was not known, so
    the caller should enqueue `dest` instead."""
    src, dest = canonical_path(src), canonical_path(dest)
    now = utcnow()
    with store.write() as session:
        row = session.scalar(select(TrackedPath).where(TrackedPath.path == src))
        if row is None or row.sha256 is None:
            return False
        replaced = session.execute(select(TrackedPath.sha256, TrackedPath.missing)
                                   .where(TrackedPath.path == dest)).first()
        _carry_tags(session, dest, replaced, row.sha256)  # saved over: keeps dest's tags
        session.execute(delete(TrackedPath).where(TrackedPath.path == dest))
        session.execute(delete(QueueItem).where(QueueItem.path == dest))
        row.path, row.last_seen, row.missing = dest, now, False
        if facts is not None:
            row.size, row.mtime_ns = facts.size, facts.mtime_ns
        session.execute(update(QueueItem).where(QueueItem.path == src).values(path=dest))
    return True


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


__all__ = [
    "CLAIM_LEASE", "Claim", "FileFacts", "Outcome", "claim", "content_status", "enqueue",
    "mark_missing", "mark_missing_under", "move_path", "queue_depth", "record_outcomes",
    "release_claims", "renew_claims", "retry_failed",
]
