"""What the query commands compute: search, stats and service status
(`atomic_output`, behind `labels export -o`, lives in fileio.py).

Search selects ImageNet classes with `taxonomy.select_classes` (WordNet-aware:
"cat" means the 13 felids) and finds, in SQL, every tracked path whose stored
top-3 has one of them (`predictions.class_index IN (...)`, served by the
(class_index, score) index), with the best matching score of its content.
Only then are the full records loaded, in bulk, by `store.records_for_paths`.
The query text is only ever compared with class names in Python or bound as
a parameter (tags): it never becomes SQL or a LIKE pattern.

A query that is also one of the user's tags (compared case-insensitively)
finds the images carrying that tag too. A tag match has no score, so those
images rank after every label match (by path), and `--min-score`, which
filters on the matching label's score, leaves them out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from labelsd.fileio import atomic_output  # `labels export -o` writes through it
from labelsd.model.taxonomy import select_classes
from labelsd.records import ImageRecord
from labelsd.store.engine import Store
from labelsd.store.nodes import list_nodes
from labelsd.store.schema import Content, Prediction, QueueItem, Tag, TrackedPath
from labelsd.store.tags import tag_key

log = logging.getLogger(__name__)


# ---- search ------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    path: str
    score: float | None  # best matching label score; None for a tag-only match


def _with_tags(stmt, tags: Iterable[str]):
    """Keep only paths whose content carries every one of `tags`."""
    for key in dict.fromkeys(tag_key(t) for t in tags if t.strip()):
        carried = aliased(Tag)  # its own alias: the outer query may join Tag itself
        stmt = stmt.where(exists().where(carried.sha256 == TrackedPath.sha256,
                                         carried.tag_key == key))
    return stmt


def search_hits(store: Store, query: str, *, exact: bool = False,
                min_score: float | None = None, tags: Iterable[str] = (),
                limit: int | None = None, include_missing: bool = False,
                since: str | None = None, until: str | None = None,
                camera: str | None = None) -> list[SearchHit]:
    """The paths a query finds, best first (see the module docstring). `since`,
    `until` (dates as `taken_window` reads them) and `camera` keep only photos
    whose EXIF says so."""
    tags = list(tags)
    taken = photo_filter(since, until, camera)
    classes = sorted(select_classes(query, exact=exact))
    key = tag_key(query)
    if limit is not None and limit <= 0:
        return []

    def settled(stmt):
        stmt = _with_tags(stmt, tags)
        if taken is not None:
            stmt = stmt.where(TrackedPath.sha256.in_(select(Content.sha256).where(*taken)))
        return stmt if include_missing else stmt.where(TrackedPath.missing.is_(False))

    hits: list[SearchHit] = []
    if classes:
        # Best matching score per content first (grouping by sha256 over the
        # (class_index, score) index is about twice as fast as grouping the
        # joined rows by path), then the paths pointing at those contents.
        matching = select(Prediction.sha256, func.max(Prediction.score).label("best")).where(
            Prediction.class_index.in_(classes))
        if min_score is not None:
            matching = matching.where(Prediction.score >= min_score)
        best = matching.group_by(Prediction.sha256).subquery("best")
        stmt = (select(TrackedPath.path, best.c.best)
                .select_from(best)
                .join(TrackedPath, TrackedPath.sha256 == best.c.sha256)
                # A path waiting in the queue (changed, or failed since) has no
                # current labels: the stored ones describe older bytes.
                .outerjoin(QueueItem, QueueItem.path == TrackedPath.path)
                .where(QueueItem.id.is_(None)))
        stmt = settled(stmt).order_by(best.c.best.desc(), TrackedPath.path)
        if limit is not None:
            stmt = stmt.limit(limit)
        with store.read() as session:
            hits = [SearchHit(path, score) for path, score in session.execute(stmt)]

    wants_more = limit is None or len(hits) < limit
    if key and min_score is None and wants_more:
        stmt = (select(TrackedPath.path)
                .join(Tag, and_(Tag.sha256 == TrackedPath.sha256, Tag.tag_key == key)))
        if classes:  # leave out what the label query above already found
            stmt = (stmt.outerjoin(QueueItem, QueueItem.path == TrackedPath.path)
                    .where(or_(QueueItem.id.is_not(None), ~exists().where(
                        Prediction.sha256 == TrackedPath.sha256,
                        Prediction.class_index.in_(classes)))))
        stmt = settled(stmt).order_by(TrackedPath.path)
        if limit is not None:
            stmt = stmt.limit(limit - len(hits))
        with store.read() as session:
            hits += [SearchHit(path, None) for path in session.scalars(stmt)]
    return hits


def taken_window(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """`--since 2024-06 --until 2024-09` as bounds on `contents.taken_at` (ISO text):
    since the first moment of `since`, up to the last moment of `until` (a
    year, a month or a day: YYYY, YYYY-MM, YYYY-MM-DD). ValueError on other text."""
    return (_period(since)[0] if since else None), (_period(until)[1] if until else None)


def _period(text: str) -> tuple[str, str]:
    """[start, end) of a year, month or day, as ISO text."""
    text = text.strip()
    for fmt, unit in (("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year")):
        try:
            start = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if unit == "day":
            end = start + timedelta(days=1)
        elif unit == "month":
            end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        else:
            end = start.replace(year=start.year + 1)
        return start.strftime("%Y-%m-%dT%H:%M:%S"), end.strftime("%Y-%m-%dT%H:%M:%S")
    raise ValueError(f"{text!r} is not a date: give YYYY, YYYY-MM or YYYY-MM-DD")


def photo_filter(since: str | None = None, until: str | None = None,
                 camera: str | None = None) -> list | None:
    """Conditions on `Content` for the EXIF filters, or None when none is given.
    The camera matches any part of make and model, case-insensitively (the text
    is bound as a LIKE with its wildcards escaped)."""
    start, end = taken_window(since, until)
    conditions = []
    if start is not None:
        conditions.append(Content.taken_at >= start)
    if end is not None:
        conditions.append(Content.taken_at < end)
    if camera and camera.strip():
        conditions.append(func.lower(Content.camera).contains(camera.strip().lower(),
                                                              autoescape=True))
    return conditions or None


def search(store: Store, query: str, **options) -> list[ImageRecord]:
    """Records of the images a query finds, best first. Options as `search_hits`."""
    hits = search_hits(store, query, **options)
    return store.records_for_paths(hit.path for hit in hits)


# ---- stats -------------------------------------------------------------------


@dataclass
class Stats:
    counts: dict[str, int]  # paths by status (pending, done, failed, missing)
    images: int  # tracked paths
    contents: int  # distinct contents
    tags: int  # distinct tags (case-insensitive)
    tagged_contents: int
    top_labels: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "counts": dict(self.counts),
            "images": self.images,
            "contents": self.contents,
            "tags": self.tags,
            "tagged_contents": self.tagged_contents,
            "top_labels": [{"label": label, "count": n} for label, n in self.top_labels],
        }


def stats(store: Store, top: int = 10) -> Stats:
    """Counts by status, distinct contents, tags, and the `top` most frequent
    first labels (counted over present, classified images)."""
    counts = store.counts()
    images = func.count(TrackedPath.id)
    top_stmt = (select(Prediction.label, images)
                .select_from(TrackedPath)
                .join(Prediction, and_(Prediction.sha256 == TrackedPath.sha256,
                                       Prediction.rank == 1))
                .where(TrackedPath.missing.is_(False))
                .group_by(Prediction.label)
                .order_by(images.desc(), Prediction.label)
                .limit(top))
    with store.read() as session:
        contents = session.scalar(select(func.count()).select_from(Content))
        n_tags = session.scalar(select(func.count(func.distinct(Tag.tag_key))))
        tagged = session.scalar(select(func.count(func.distinct(Tag.sha256))))
        top_labels = [(label, n) for label, n in session.execute(top_stmt)]
    return Stats(counts=counts, images=sum(counts.values()), contents=contents or 0,
                 tags=n_tags or 0, tagged_contents=tagged or 0, top_labels=top_labels)


# ---- service status ------------------------------------------------------------


def service_status(store: Store) -> dict:
    """`labels status --json`, the contract in docs/contract.md plus a `nodes` list.

    `running` is true while some node is alive; pid, model, device, watching
    and heartbeat_age_s describe the freshest node (alive ones first), null or
    empty when no service ever registered."""
    nodes = list_nodes(store)
    counts = store.counts()
    freshest = sorted(nodes, key=lambda n: not n.alive)[0] if nodes else None
    return {
        "running": any(n.alive for n in nodes),
        "pid": freshest.pid if freshest else None,
        "model": (freshest.model or "") if freshest else "",
        "device": (freshest.device or "") if freshest else "",
        "watching": list(freshest.watching) if freshest else [],
        "queued": counts["pending"],
        "done": counts["done"],
        "failed": counts["failed"],
        "missing": counts["missing"],
        "heartbeat_age_s": freshest.heartbeat_age_s if freshest else None,
        "nodes": [
            {"node_id": n.node_id, "host": n.host, "pid": n.pid, "device": n.device or "",
             "model": n.model or "", "watching": list(n.watching),
             "heartbeat_age_s": n.heartbeat_age_s, "alive": n.alive,
             "done": n.done, "failed": n.failed}
            for n in nodes
        ],
    }


__all__ = ["SearchHit", "Stats", "atomic_output", "photo_filter", "search", "search_hits",
           "service_status", "stats", "taken_window"]
