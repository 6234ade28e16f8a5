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

from sqlalchemy import select

from labelsd.store import workqueue
from labelsd.store.engine import Store
from labelsd.store.schema import Content, QueueItem, TrackedPath

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
