"""Storing what a photo says of itself (`PhotoMeta`) with its content: when and
where it was taken and with what camera, and its keywords as imported tags
(`tags.imported`, so `labels tags` tells them from the ones a person gave).
Runs inside the writer's transaction, for a content classified just now: the
columns go into the batch's multi-row write of contents, the keywords after it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy.orm import Session

from labelsd.records import PhotoMeta, Prediction
from labelsd.store.engine import dialect_insert, write_rows
from labelsd.store.judgements import import_rejections, labels_named
from labelsd.store.schema import Tag, utcnow
from labelsd.store.tags import InvalidTag, clean_tag, tag_key

log = logging.getLogger(__name__)


def meta_columns(meta: PhotoMeta | None) -> dict:
    """The content's date, camera and position (all None without metadata), as
    the columns of a `contents` row."""
    if meta is None:
        return {"taken_at": None, "camera": None, "gps_lat": None, "gps_lon": None}
    return {"taken_at": meta.taken_at, "camera": meta.camera,
            "gps_lat": meta.gps_lat, "gps_lon": meta.gps_lon}


def import_keywords(session: Session, sha256: str, meta: PhotoMeta, now=None,
                    labels: Iterable[Prediction] = ()) -> None:
    """Import the photo's keywords as tags of its content (a tag it already
    carries is kept as it is), however many, and the keywords its sidecar says a
    person took away that name one of its `labels` as rejections of them (source
    "xmp", store/judgements.py). The content row must exist."""
    named = labels_named(meta.suppressed, labels)
    if named:
        import_rejections(session, {sha256: named}, "xmp", now)
    rows: dict[str, str] = {}
    for word in meta.keywords:
        try:
            text = clean_tag(word)
        except InvalidTag:
            continue
        rows.setdefault(tag_key(text), text)
    if not rows:
        return
    now = now or utcnow()
    # write_rows, not one multi-row VALUES: its bound values do not grow with the
    # rows (60,000 keywords were 300,000 of them, past SQLite's and psycopg's limits).
    write_rows(session, dialect_insert(session, Tag.__table__).on_conflict_do_nothing(
        index_elements=["sha256", "tag_key"]),
        [{"sha256": sha256, "tag_key": key, "tag": text, "created_at": now, "imported": True}
         for key, text in rows.items()])
    log.debug("imported %d keyword(s) as tags of %s", len(rows), sha256[:12])


__all__ = ["import_keywords", "meta_columns"]
