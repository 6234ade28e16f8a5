"""Everything that changes which content a path has.

The writer stores a whole batch of outcomes in one transaction
(`record_outcomes`): contents, their predictions, the paths that point at them,
tags carried to an edited photo's new version, and the queue rows done. The
watcher's renames (`move_path`) and deletions (`mark_missing`) land here too:
labels and tags belong to the content (its SHA-256), paths only point at it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, literal, select, update
from sqlalchemy.orm import Session

from labelsd.paths import canonical_path
from labelsd.records import Claim, FileFacts, Outcome
from labelsd.store import workqueue
from labelsd.store.engine import Store, dialect_insert
from labelsd.store.photometa import store_photo_meta
from labelsd.store.relabel import same_model
from labelsd.store.schema import Content, Prediction, QueueItem, Tag, TrackedPath, utcnow

log = logging.getLogger(__name__)


def content_status(store: Store, shas: Iterable[str], model: str | None = None) -> dict[str, str]:
    """The stored status of each known content (done/failed/pending); with `model`,
    a content another model labelled is "relabel" instead of "done"."""
    wanted = list(set(shas))
    if not wanted:
        return {}
    with store.read() as session:
        rows = session.execute(select(Content.sha256, Content.status, Content.model)
                               .where(Content.sha256.in_(wanted))).all()
    return {sha: "relabel" if model and status == "done" and not same_model(stored, model)
            else status for sha, status, stored in rows}


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
        # Claims whose queue row still stands at their path: a row deleted (the file
        # was deleted) or moved to another path (renamed) while the batch was in
        # flight must not bring the old path back as present.
        live = {(row.id, row.path) for row in session.execute(
            select(QueueItem.id, QueueItem.path)
            .where(QueueItem.id.in_([o.claim.id for o in outcomes])))}
        for o in outcomes:
            if o.kind in ("classified", "linked", "bad_image") and (
                    (o.claim.id, o.claim.path) not in live):
                _store_content(session, o, now, contents)  # the bytes' labels still count
                workqueue.release_moved(session, o.claim, node_id)
            elif o.kind in ("classified", "linked", "bad_image"):
                _store_content(session, o, now, contents)
                _point_path(session, o, now)
                _carry_tags(session, o.claim.path, before.get(o.claim.path), o.sha256)
                workqueue.finish_claim(session, o.claim, node_id)
            elif o.kind == "retry":
                workqueue.retry_later(session, o, now)
            elif o.kind == "vanished":
                _forget_vanished(session, o.claim, node_id, now)
            else:
                raise ValueError(f"unknown outcome kind {o.kind!r}")


def _store_content(session: Session, o: Outcome, now: datetime,
                   contents: dict[str, Content]) -> None:
    """Create or update the content of `o`; `contents` holds the batch's stored
    contents by SHA-256 and gains the ones created here."""
    existing = contents.get(o.sha256)
    if existing is not None and existing.status == "done" and (
            o.kind != "classified" or same_model(existing.model, o.model)):
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
    if o.kind == "classified" and o.meta is not None:
        store_photo_meta(session, existing, o.meta)


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


def _forget_vanished(session: Session, c: Claim, node_id: str, now: datetime) -> None:
    """The file went away before it was read: drop the queue row; a path never
    read is forgotten, a path that had content becomes missing."""
    gone = session.execute(delete(QueueItem).where(
        QueueItem.id == c.id, QueueItem.enqueued_at == c.enqueued_at)).rowcount
    if not gone:
        workqueue.finish_claim(session, c, node_id)
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
