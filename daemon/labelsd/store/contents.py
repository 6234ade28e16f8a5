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
from typing import NamedTuple

from sqlalchemy import delete, literal, or_, select, update
from sqlalchemy.orm import Session

from labelsd.paths import canonical_path, shown
from labelsd.records import Claim, FileFacts, Outcome, OutcomeKind
from labelsd.store import embeddings, pgbatch, workqueue
from labelsd.store.engine import CHUNK, Store, dialect_insert, write_rows
from labelsd.store.photometa import import_keywords, meta_columns
from labelsd.store.relabel import keep_confirmed, same_model
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


FINAL = (OutcomeKind.CLASSIFIED, OutcomeKind.LINKED, OutcomeKind.BAD_IMAGE)


def record_outcomes(store: Store, node_id: str, outcomes: Sequence[Outcome]) -> None:
    """Store a batch of outcomes in ONE transaction: contents, predictions, their
    vectors, paths, and the queue rows done (or released, if re-stamped meanwhile).

    The batch costs the same handful of statements whatever its size: two
    lookups, then multi-row writes (contents, predictions, paths, queue rows).
    Only the rare outcomes (a retry, a vanished file, a photo changed in place
    whose tags carry over) add statements of their own."""
    if not outcomes:
        return
    now = utcnow()
    backfilled = [o for o in outcomes if o.claim.embed_only is not None]  # a vector, no queue row
    outcomes = [o for o in outcomes if o.claim.embed_only is None]
    final = [o for o in outcomes if o.kind in FINAL]
    with store.write() as session:
        shas = sorted({o.sha256 for o in final if o.sha256})
        stored, before, live = _lookups(session, shas, [o.claim.path for o in final],
                                        [o.claim.id for o in final])
        present = [o for o in final if (o.claim.id, o.claim.path) in live]
        if final:
            _store_contents(session, final, stored, now)  # the bytes' labels count either way
            for o in final:
                if (o.claim.id, o.claim.path) not in live:
                    workqueue.release_moved(session, o.claim, node_id)
        if present:
            _point_paths(session, present, now)
            for o in present:
                _carry_tags(session, o.claim.path, before.get(o.claim.path), o.sha256)
            workqueue.finish_claims(session, [o.claim for o in present], node_id)
        for o in outcomes:
            if o.kind == OutcomeKind.RETRY:
                workqueue.retry_later(session, o, now)
            elif o.kind == OutcomeKind.VANISHED:
                _forget_vanished(session, o.claim, node_id, now)
            elif o.kind not in FINAL:
                raise ValueError(f"unknown outcome kind {o.kind!r}")
        embeddings.store_vectors(session, [*final, *backfilled])


def _lookups(session: Session, shas: list[str], paths: list[str],
             ids: list[int]) -> tuple[dict, dict, set]:
    """The batch's known contents ({sha256: (status, model)}), what each path
    pointed at before ({path: row with .sha256, .missing}: a changed photo keeps
    its tags), and its claims whose queue row still stands at their path ({(id,
    path)}: a row deleted (the file was deleted) or moved to another path
    (renamed) while the batch was in flight must not bring the old path back)."""
    if not paths:
        return {}, {}, set()
    if pgbatch.is_pg(session):  # one round trip for the three
        known, was, standing = pgbatch.lookups(session, shas, paths, ids)
        return ({sha: (status, model) for sha, status, model in known},
                {row[0]: _Was(*row) for row in was}, {tuple(row) for row in standing})
    # (Core columns, not ORM attributes: the ORM's statement path costs more
    # Python than these lookups cost the database.)
    c, p, q = Content.__table__.c, TrackedPath.__table__.c, QueueItem.__table__.c
    stored = {sha: (status, model) for sha, status, model in session.execute(
        select(c.sha256, c.status, c.model).where(c.sha256.in_(shas)))} if shas else {}
    before = {row.path: row for row in session.execute(
        select(p.path, p.sha256, p.missing).where(p.path.in_(paths)))}
    live = {(row.id, row.path) for row in session.execute(
        select(q.id, q.path).where(q.id.in_(ids)))}
    return stored, before, live


class _Was(NamedTuple):
    path: str
    sha256: str | None
    missing: bool


def _store_contents(session: Session, final: list[Outcome], stored: dict[str, tuple],
                    now: datetime) -> None:
    """Create or update the batch's contents. `stored` is the (status, model) of
    each one already in the database. A content `done` is not touched again
    (classified by another path, node or an earlier run), unless a classification
    by another model family relabels it; a `linked` outcome only creates its
    content when it is not stored. Within the batch the first classification of
    some bytes wins, as it would one outcome at a time."""
    known = dict(stored)
    done, failed, refreshed, relabelled = {}, {}, [], []
    for o in final:
        current, model = known.get(o.sha256, (None, None))
        if current == "done" and (o.kind != OutcomeKind.CLASSIFIED or same_model(model, o.model)):
            continue
        if o.kind == OutcomeKind.LINKED and current is not None:
            continue
        row = {"sha256": o.sha256, "size": o.size or 0, "width": o.width, "height": o.height,
               "format": o.format}
        if o.kind == OutcomeKind.CLASSIFIED:
            done[o.sha256] = (o, {**row, "status": "done", "error": None, "model": o.model,
                                  "classified_at": now, **meta_columns(o.meta)})
            failed.pop(o.sha256, None)
            if o.sha256 in stored:  # failed before, or another model's: older predictions go
                refreshed.append(o.sha256)
            if current == "done":
                relabelled.append(o.sha256)
        else:
            failed[o.sha256] = {**row, "status": "failed", "error": o.error, "model": None,
                                "classified_at": None}
        known[o.sha256] = ("done", o.model) if o.kind == OutcomeKind.CLASSIFIED else ("failed", None)
    table = Content.__table__
    predictions = keep_confirmed(session, [  # (confirmed labels outlive a relabel)
        {"sha256": o.sha256, "rank": p.rank, "model": o.model, "class_index": p.class_index,
         "wnid": p.wnid, "label": p.label, "score": float(p.score)}
        for o, _ in done.values() for p in o.predictions], relabelled)
    if pgbatch.is_pg(session):
        # Another node may have classified it meanwhile: a content done is only
        # overwritten by a relabel of this batch (%(where)s).
        not_done = "contents.status <> 'done' OR contents.sha256 = ANY(%(where)s::text[])"
        pgbatch.insert_rows(session, table, list(failed.values()), pgbatch.upsert_sql(
            ["sha256"], ("width", "height", "format", "status", "error"), not_done), relabelled)
        if not done:
            return
        if refreshed:
            session.execute(delete(Prediction.__table__).where(Prediction.sha256.in_(refreshed)))
        pgbatch.insert_rows(session, table, [row for _, row in done.values()], pgbatch.upsert_sql(
            ["sha256"], _DONE_COLUMNS, not_done), relabelled)
        pgbatch.insert_rows(session, Prediction.__table__, predictions,
                            pgbatch.upsert_sql(["sha256", "rank"]))
    else:
        _store_contents_sqlite(session, failed, done, refreshed, relabelled, predictions)
        if not done:
            return
    for o, _ in done.values():
        if o.meta is not None:
            import_keywords(session, o.sha256, o.meta, now, o.predictions)


_DONE_COLUMNS = ("width", "height", "format", "status", "error", "model", "classified_at",
                 *meta_columns(None))


def _store_contents_sqlite(session: Session, failed: dict, done: dict, refreshed: list,
                           relabelled: list, predictions: list[dict]) -> None:
    table = Content.__table__
    not_done = table.c.status != "done"  # another node may have classified it meanwhile
    if relabelled:  # ... except the ones this batch relabels on purpose (one literal each:
        # SQLite writes many rows with executemany, which takes no expanding IN list)
        not_done = or_(not_done, *(table.c.sha256 == literal(sha) for sha in relabelled))
    if failed:
        ins = dialect_insert(session, table)
        write_rows(session, ins.on_conflict_do_update(index_elements=["sha256"], where=not_done, set_={
            name: ins.excluded[name] for name in ("width", "height", "format", "status", "error")}),
            list(failed.values()))
    if not done:
        return
    if refreshed:
        session.execute(delete(Prediction.__table__).where(Prediction.sha256.in_(refreshed)))
    ins = dialect_insert(session, table)
    write_rows(session, ins.on_conflict_do_update(index_elements=["sha256"], where=not_done, set_={
        name: ins.excluded[name] for name in _DONE_COLUMNS}), [row for _, row in done.values()])
    write_rows(session, dialect_insert(session, Prediction.__table__).on_conflict_do_nothing(
        index_elements=["sha256", "rank"]), predictions)


_PATH_COLUMNS = ("sha256", "size", "mtime_ns", "last_seen", "missing")


def _point_paths(session: Session, final: list[Outcome], now: datetime) -> None:
    rows = [{"path": o.claim.path, "sha256": o.sha256, "size": o.size, "mtime_ns": o.mtime_ns,
             "first_seen": now, "last_seen": now, "missing": False} for o in final]
    if pgbatch.is_pg(session):
        pgbatch.insert_rows(session, TrackedPath.__table__, rows,
                            pgbatch.upsert_sql(["path"], _PATH_COLUMNS))
        return
    ins = dialect_insert(session, TrackedPath.__table__)
    write_rows(session, ins.on_conflict_do_update(index_elements=["path"], set_={
        name: ins.excluded[name] for name in _PATH_COLUMNS}), rows)


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
        log.info("%s changed: %d tag(s) carried over to the new version", shown(path), carried)


def _forget_vanished(session: Session, c: Claim, node_id: str, now: datetime) -> None:
    """The file went away before it was read: drop the queue row; a path never
    read is forgotten, a path that had content becomes missing."""
    gone = session.execute(delete(QueueItem).where(
        QueueItem.id == c.id, QueueItem.enqueued_at == c.enqueued_at)).rowcount
    if not gone:
        workqueue.finish_claims(session, [c], node_id)
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
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start:start + CHUNK]
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
