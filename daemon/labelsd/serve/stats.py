"""What `labels stats` and `labels tags` summarise (re-exported by serve/query.py).

Each function takes a `Reader` (serve/reader.py) or a `Store`. Counts by status
come from the counters the triggers keep (store/counters.py); the top labels
are counted from two covering indexes alone (migration 5, store/query_indexes.py):
the first labels in content order, and the present paths by content. SQLite
walks the first and looks each content up in the second, never reading a table
row, so a million images take a fraction of a second.

A person's rejections (store/judgements.py) are counted off afterwards, from the
rejections themselves (few, one step each): a photo whose first label was
rejected counts under its first label left, and an imported keyword a rejected
label hides (store/judgedsql.py) leaves the tag counts. A library with none
pays one empty look-up per count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from labelsd.serve.reader import as_reader, in_list
from labelsd.serve.tagmatch import DISTINCT_TAG_KEYS, tag_key
from labelsd.store.judgedsql import FIRST_LABELS_MOVED_SQL, HIDDEN_TAGS_SQL, hidden_tag_sql
from labelsd.store.sqlparts import CHUNK

log = logging.getLogger(__name__)

# CROSS JOIN fixes SQLite's join order (first labels outside, in content order,
# so the paths index is visited in order too); PostgreSQL plans it as an inner join.
TOP_LABELS_SQL = ("SELECT r.label, count(*) AS n FROM predictions r CROSS JOIN paths p "
                  "WHERE r.rank = 1 AND p.sha256 = r.sha256 AND NOT p.missing "
                  "GROUP BY r.label ORDER BY n DESC, r.label LIMIT :top")


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


def stats(source, top: int = 10) -> Stats:
    """Counts by status, distinct contents, tags, and the `top` most frequent
    first labels (each present image counted once by its content's first label)."""
    reader = as_reader(source)
    counts = reader.counts()
    with reader.read() as run:
        (contents,), = run("SELECT count(*) FROM contents", {})
        # Each count in the order of its own index, nothing sorted: count(DISTINCT ...)
        # had SQLite sort what it counted in a temporary B-tree (2 million tag rows:
        # 0.82 s for both, 5 s for the contents alone once tags are stored in key order).
        (n_tags,), = run(f"SELECT count(*) FROM ({DISTINCT_TAG_KEYS}) AS keys", {})
        (tagged,), = run("SELECT count(*) FROM (SELECT DISTINCT sha256 FROM tags) AS tagged", {})
        top_labels = _top_labels(run, top)
        hidden = run(HIDDEN_TAGS_SQL, {})
        if hidden:  # a key (a content) counts while one of its tag rows is not hidden
            n_tags -= len({k for _, k, _ in hidden} - _visible(run, "tag_key", {k for _, k, _ in hidden}))
            tagged -= len({s for s, _, _ in hidden} - _visible(run, "sha256", {s for s, _, _ in hidden}))
    return Stats(counts=counts, images=sum(counts.values()), contents=contents or 0,
                 tags=n_tags or 0, tagged_contents=tagged or 0, top_labels=top_labels)


def label_counts(source, top: int = 1000) -> list[tuple[str, int]]:
    """The `top` most frequent first labels with their image counts, as `stats` counts
    them (each present image once, by its content's first label): `labels serve`'s
    /labels page, every label of the library (ImageNet has 1000)."""
    with as_reader(source).read() as run:
        return _top_labels(run, top)


def _top_labels(run, top: int) -> list[tuple[str, int]]:
    """The `top` first labels by present images, each photo counted by its first
    label not rejected."""
    moved = run(FIRST_LABELS_MOVED_SQL, {})
    if not moved:
        return [(label, n) for label, n in run(TOP_LABELS_SQL, {"top": top})]
    counts = {label: n for label, n in run(TOP_LABELS_SQL, {"top": 1 << 30})}
    for was, now, images in moved:
        counts[was] = counts.get(was, 0) - images
        if now is not None:
            counts[now] = counts.get(now, 0) + images
    ranked = sorted(((label, n) for label, n in counts.items() if n > 0),
                    key=lambda item: (-item[1], item[0]))
    return ranked[:top]


def _visible(run, column: str, wanted: set[str]) -> set[str]:
    """Which of these tag keys (contents) have a tag row that is not hidden."""
    found: set[str] = set()
    ordered = sorted(wanted)
    for start in range(0, len(ordered), CHUNK):
        params: dict = {}
        found.update(row[0] for row in run(
            f"SELECT DISTINCT t.{column} FROM tags t WHERE t.{column} IN "
            f"({in_list('v', ordered[start:start + CHUNK], params)}) AND NOT {hidden_tag_sql('t')}",
            params))
    return found


def tag_counts(source) -> list[dict]:
    """Every tag with how many images carry it (copies count each), on how many
    contents, and on how many of those it was imported from the photo's own
    keywords, most used first: [{"tag", "count", "contents", "imported"}]."""
    # A tag row is one (content, tag key): per key, its rows are its contents, and its
    # images are the paths of those contents, counted content by content in the tags'
    # own order (the paths index is then read in order too). Joining every tag row to
    # its paths and counting distinct contents per key took 10.9 s at 2 million tag
    # rows; this, 2.1 s.
    with as_reader(source).read() as run:
        # (sums cast back to integers: PostgreSQL's sum of a count is a numeric)
        rows = run("SELECT min(tag), CAST(sum(n) AS BIGINT) AS images, count(*), "
                   "CAST(sum(imported) AS BIGINT) FROM ("
                   "SELECT t.tag_key AS tag_key, t.tag AS tag, "
                   "(SELECT count(*) FROM paths p WHERE p.sha256 = t.sha256) AS n, "
                   "CASE WHEN t.imported THEN 1 ELSE 0 END AS imported "
                   "FROM tags t ORDER BY t.sha256) AS per_content "
                   "GROUP BY tag_key ORDER BY images DESC, tag_key", {})
        hidden = run(HIDDEN_TAGS_SQL, {})
    counts = [{"tag": tag, "count": n, "contents": c, "imported": i} for tag, n, c, i in rows]
    if not hidden:
        return counts
    by_key = {tag_key(c["tag"]): c for c in counts}
    for _, key, images in hidden:  # hidden rows are imported ones, one content each
        entry = by_key[key]
        entry["count"] -= images
        entry["contents"] -= 1
        entry["imported"] -= 1
    return sorted((c for c in counts if c["contents"] > 0),
                  key=lambda c: (-c["count"], tag_key(c["tag"])))


__all__ = ["TOP_LABELS_SQL", "Stats", "label_counts", "stats", "tag_counts"]
