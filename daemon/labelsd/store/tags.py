"""User tags: free text on a content, so they follow a renamed file and apply
to every copy of it.

A tag is trimmed and otherwise kept as typed (case, spaces, any script);
`tag_key` (the case-folded form) is what matching and uniqueness use, so
tagging "Vacation" where "vacation" exists keeps the one already there.
Each change is one write transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import delete, select

from labelsd.store.engine import Store
from labelsd.store.schema import Tag

log = logging.getLogger(__name__)

# The width of tags.tag and tags.tag_key: PostgreSQL enforces it, SQLite does not,
# so this one check (on both the tag and its case-folded key, which can be longer:
# "ß" folds to "ss") is what every database applies.
MAX_TAG_LENGTH = min(Tag.__table__.c.tag.type.length, Tag.__table__.c.tag_key.type.length)


class InvalidTag(ValueError):
    """A tag that is empty after trimming, or too long. The CLI reports it as a
    usage error (exit 2)."""


def clean_tag(tag: str) -> str:
    """The tag as stored: trimmed; InvalidTag when nothing (or too much) is left."""
    cleaned = tag.strip()
    if not cleaned:
        raise InvalidTag("a tag cannot be empty")
    if len(cleaned) > MAX_TAG_LENGTH or len(tag_key(cleaned)) > MAX_TAG_LENGTH:
        raise InvalidTag(f"a tag is at most {MAX_TAG_LENGTH} characters (counted after "
                         f"case folding, where ß is ss): {cleaned[:40]!r}...")
    return cleaned


def tag_key(tag: str) -> str:
    """The form tags are matched by: trimmed and case-folded."""
    return tag.strip().casefold()


def _clean_all(tags: Iterable[str]) -> dict[str, str]:
    """key -> tag as typed, first spelling wins, order kept."""
    cleaned: dict[str, str] = {}
    for tag in tags:
        text = clean_tag(tag)
        cleaned.setdefault(tag_key(text), text)
    return cleaned


def _tags_of(session, sha256: str) -> list[str]:
    return list(session.scalars(select(Tag.tag).where(Tag.sha256 == sha256)
                                .order_by(Tag.tag_key)))


def add_tags(store: Store, path: str, tags: Iterable[str]) -> list[str]:
    """Tag the content at `path` (NotTracked if the store does not know it).
    Returns every tag the content carries afterwards."""
    wanted = _clean_all(tags)
    with store.write() as session:
        row = store.require_content(session, path)
        have = set(session.scalars(select(Tag.tag_key).where(Tag.sha256 == row.sha256)))
        session.add_all(Tag(sha256=row.sha256, tag_key=key, tag=text)
                        for key, text in wanted.items() if key not in have)
        session.flush()
        return _tags_of(session, row.sha256)


class Untagged(NamedTuple):
    """What `remove_tags` did: the tags left, and the given tags the content did not carry."""

    left: list[str]
    absent: list[str]


def remove_tags(store: Store, path: str, tags: Iterable[str]) -> Untagged:
    """Remove tags (matched case-insensitively) from the content at `path`. Tags it
    does not carry change nothing and come back in `absent`, as the person typed them."""
    keys = _clean_all(tags)
    with store.write() as session:
        row = store.require_content(session, path)
        have = set(session.scalars(select(Tag.tag_key).where(Tag.sha256 == row.sha256)))
        session.execute(delete(Tag).where(Tag.sha256 == row.sha256, Tag.tag_key.in_(list(keys))))
        return Untagged(_tags_of(session, row.sha256), [text for key, text in keys.items() if key not in have])


__all__ = ["InvalidTag", "Untagged", "add_tags", "clean_tag", "remove_tags", "tag_key"]
