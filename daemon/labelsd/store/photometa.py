"""Storing what a photo says of itself (`PhotoMeta`) with its content: when and
where it was taken and with what camera, and its keywords as imported tags
(`tags.imported`, so `labels tags` tells them from the ones a person gave).
Runs inside the writer's transaction, for a content classified just now."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from labelsd.records import PhotoMeta
from labelsd.store.engine import dialect_insert
from labelsd.store.schema import Content, Tag, utcnow
from labelsd.store.tags import InvalidTag, clean_tag, tag_key

log = logging.getLogger(__name__)


def store_photo_meta(session: Session, content: Content, meta: PhotoMeta) -> None:
    """Set the content's date, camera and position; import its keywords as tags
    (a tag it already carries is kept as it is)."""
    content.taken_at, content.camera = meta.taken_at, meta.camera
    content.gps_lat, content.gps_lon = meta.gps_lat, meta.gps_lon
    rows: dict[str, str] = {}
    for word in meta.keywords:
        try:
            text = clean_tag(word)
        except InvalidTag:
            continue
        rows.setdefault(tag_key(text), text)
    if not rows:
        return
    session.flush()  # the content row exists before tags point at it
    now = utcnow()
    session.execute(dialect_insert(session, Tag).values([
        {"sha256": content.sha256, "tag_key": key, "tag": text, "created_at": now, "imported": True}
        for key, text in rows.items()]).on_conflict_do_nothing(index_elements=["sha256", "tag_key"]))
    log.debug("imported %d keyword(s) as tags of %s", len(rows), content.sha256[:12])


__all__ = ["store_photo_meta"]
