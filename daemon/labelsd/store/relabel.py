"""Labels from one model at a time: which model's labels a content holds, and
queueing the contents another model labelled, so the active one labels them again.

A stored model name is "<family>/<weights>" ("InceptionV3/imagenet",
"EfficientNetLite0/imagenet"); two names of one family are the same model with
other weights, which needs no relabelling. While a path waits in the queue,
search leaves it out (its stored labels are another model's), and `labels show`
says which model labelled it.
"""

from __future__ import annotations

import logging

from sqlalchemy import and_, select, tuple_
from sqlalchemy.orm import Session

from labelsd.store import workqueue
from labelsd.store.engine import CHUNK, Store
from labelsd.store.judgements import CONFIRMED, REJECTED, lock_contents
from labelsd.store.schema import Content, Prediction, QueueItem, TrackedPath
from labelsd.store.schema import Judgement as JudgementRow

log = logging.getLogger(__name__)


def model_family(name: str | None) -> str:
    """"InceptionV3/imagenet" -> "InceptionV3"; "" for None."""
    return (name or "").split("/", 1)[0]


def same_model(stored: str | None, model: str | None) -> bool:
    """Whether labels stored by `stored` count as `model`'s (an unknown one, None, does)."""
    return not stored or not model or model_family(stored) == model_family(model)


def other_model_paths(store: Store, model: str, under: str | None = None) -> list[str]:
    """Present, settled paths whose content another model family labelled (`under`: a
    canonical folder, to stay inside it)."""
    family = model_family(model)
    stmt = (select(TrackedPath.path)
            .join(Content, Content.sha256 == TrackedPath.sha256)
            .outerjoin(QueueItem, QueueItem.path == TrackedPath.path)
            .where(QueueItem.id.is_(None), TrackedPath.missing.is_(False),
                   Content.status == "done",
                   Content.model.is_not(None), Content.model != family,
                   ~Content.model.startswith(family + "/", autoescape=True)))
    if under is not None:
        folder = under.rstrip("/")
        stmt = stmt.where(TrackedPath.path.startswith(folder + "/", autoescape=True))
    with store.read() as session:
        return list(session.scalars(stmt.order_by(TrackedPath.path)))


def queue_other_models(store: Store, model: str, under: str | None = None) -> int:
    """Queue every path `other_model_paths` finds, for `model` to label; how many."""
    paths = other_model_paths(store, model, under)
    if not paths:
        return 0
    queued = workqueue.enqueue(store, paths, force=True)
    log.info("%d image(s) labelled by another model queued for %s", queued, model_family(model))
    return queued


def keep_confirmed(session: Session, rows: list[dict], relabelled: list[str]) -> list[dict]:
    """The writer's new prediction rows (dicts of `predictions`' columns), with each
    confirmed label of a relabelled content kept: where the new model's top 3
    lacks it, it takes the place of a new label that is rejected, else of the new
    model's lowest-ranked one that is not confirmed, with the score (and model
    name) it had; the content's labels are then ranked by score. Called before
    the old predictions are deleted, inside the writer's transaction; on
    PostgreSQL it first locks the relabelled contents (see the module docstring)."""
    if not relabelled:
        return rows
    lock_contents(session, relabelled)
    p, j = Prediction.__table__.c, JudgementRow.__table__.c
    kept: dict[str, list[dict]] = {}
    judged: dict[str, dict[int, str]] = {}
    for start in range(0, len(relabelled), CHUNK):
        part = relabelled[start:start + CHUNK]
        for sha, index, verdict in session.execute(select(j.sha256, j.class_index, j.verdict)
                                                   .where(j.sha256.in_(part))):
            judged.setdefault(sha, {})[index] = verdict
        confirmed = [(sha, i) for sha, by in judged.items() if sha in part
                     for i, v in by.items() if v == CONFIRMED]
        if confirmed:
            for row in session.execute(select(p).where(
                    and_(p.sha256.in_(part), tuple_(p.sha256, p.class_index).in_(confirmed)))):
                kept.setdefault(row.sha256, []).append(dict(row._mapping))
    if not kept:
        return rows
    by_sha: dict[str, list[dict]] = {}
    for row in rows:
        by_sha.setdefault(row["sha256"], []).append(row)
    out = [row for row in rows if row["sha256"] not in kept]
    for sha, old in kept.items():
        out += _merge_kept(by_sha.get(sha, []), old, judged.get(sha, {}))
    return out


def _merge_kept(new: list[dict], old: list[dict], verdicts: dict[int, str]) -> list[dict]:
    have = {r["class_index"] for r in new}
    missing = [r for r in old if r["class_index"] not in have]
    slots = len(new) or len(old)
    # rejected new labels go first (nobody sees them), then the lowest-ranked unconfirmed
    order = sorted(new, key=lambda r: (verdicts.get(r["class_index"]) == REJECTED,
                                       verdicts.get(r["class_index"]) != CONFIRMED, r["rank"]))
    merged = sorted(order[:max(0, slots - len(missing))] + missing,
                    key=lambda r: -r["score"])[:max(slots, len(missing))]
    return [{**r, "rank": rank} for rank, r in enumerate(merged, start=1)]
