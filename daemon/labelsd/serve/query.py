"""What the query commands compute: search, stats, tags and service status
(`atomic_output`, behind `labels export -o`, lives in fileio.py).

Every function takes a `Reader` (serve/reader.py: sqlite3 read-only on a
SQLite file, no SQLAlchemy) or a `Store`. The SQL is plain text with bound
parameters; the query text is only ever compared with class names and tag
words in Python, or bound as a parameter: it never becomes SQL or a LIKE
pattern.

Search selects ImageNet classes with `taxonomy.select_classes` (WordNet-aware:
"cat" means the 13 felids, "cats" the same) and finds every tracked path whose
stored top-3 has one of them, with the best matching score of its content
(grouped by content over the (class_index, score, sha256) index alone, then joined
to the paths). `find` reads the hits' records in that same
statement (store/recordsql.py's columns, the labels joined by rank), not path
by path afterwards, and builds them as the dicts `--json` prints. A
query also finds the images whose tags contain its words ("grandma" finds
"Grandma's 90th"), compared as words in their base forms. A
tag match has no score, so those images rank after every label match (by
path).

A label match needs a score of at least `min_score`: by default the configured
`search_min_score` (10%: below it the model's labels are mostly noise, see
bench/scorefloor.py); 0 shows every match. A label the person confirmed is
theirs, not a guess: no floor hides it. A tag match is what a person said,
not a guess, so no floor hides it either. `find` also counts the label matches
the floor hid, for the CLI to say so.

A person's judgements (store/judgements.py) count everywhere: a rejected label
never finds its photo (a photo whose only cat label was rejected is not found
by `cat`; one with another cat label is, ranked by that one), and a photo found
by a confirmed label ranks before the rest (by that label's score).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

from labelsd.config import DEFAULT_SEARCH_MIN_SCORE
from labelsd.fileio import atomic_output  # `labels export -o` writes through it
from labelsd.model.taxonomy import select_classes, suggest
from labelsd.records import ImageRecord
from labelsd.serve.reader import as_reader
from labelsd.serve.searchsql import (  # Narrowing, photo_sql, taken_window: re-exported
    Narrowing,
    hidden_count,
    photo_sql,
    search_rows,
    taken_window,
)
from labelsd.serve.stats import Stats, stats, tag_counts  # re-exported: the query API in one place
from labelsd.serve.status import (  # re-exported too
    ALIVE_WITHIN_S,
    STALE_NODE_S,
    list_nodes,
    service_status,
    watched_roots,
)
from labelsd.serve.tagmatch import matching_tag_keys, tag_key  # re-exported
from labelsd.store import recordjson, recordsql

log = logging.getLogger(__name__)



# ---- search ------------------------------------------------------------------

# A search for at most this many records (`--limit`, a page of `labels serve`) reads
# its hits first and then their records; a longer one reads both in one statement.
FEW = 1000


@dataclass(frozen=True)
class SearchHit:
    path: str
    score: float | None  # best matching label score; None for a tag-only match


@dataclass
class SearchResult:
    """What a search found, and why: the classes and tags it matched (the CLI
    shows which label made each hit), and names to suggest when nothing did.
    `found` holds the records as the dicts `--json` prints; `records` as
    `ImageRecord`s, built when first asked for. A search for JSON text
    (`find(..., as_json=True)`) holds each record's text in `texts` instead, and
    `found` is empty."""

    found: list[dict]
    classes: frozenset[int]
    tag_keys: tuple[str, ...]
    suggestions: list[str] = field(default_factory=list)
    texts: list[str] | None = None
    floor: float = 0.0  # the score a label match needed
    hidden: int = 0  # label matches below the floor (what `min_score=0` would add)

    @cached_property
    def records(self) -> list[ImageRecord]:
        return [ImageRecord.from_dict(d) for d in self.found]

    def reason(self, rec: dict) -> str:
        """Which label (the best scoring matching one above the floor, a confirmed one
        first) or tag made this hit (`rec` as `ImageRecord.to_dict` gives it)."""
        matching = [p for p in rec["labels"] if p["class_index"] in self.classes
                    and (p["score"] >= self.floor or p.get("confirmed"))]
        if matching:
            best = max(matching, key=lambda p: (p.get("confirmed", False), p["score"]))
            return f"{best['label']} {best['score']:.0%}" + (
                " (confirmed)" if best.get("confirmed") else "")
        tagged = [t for t in rec["tags"] if tag_key(t) in self.tag_keys]
        return f"tag {tagged[0]}" if tagged else ""


def _search_hits(reader, classes: frozenset[int], tag_keys: tuple[str, ...],
                 **options) -> list[SearchHit]:
    with reader.read() as run:
        by_label, by_tag = search_rows(run, classes, tag_keys, **options)
    return [SearchHit(path, score) for path, score in by_label] + [
        SearchHit(path, None) for (path,) in by_tag]


def search_hits(source, query: str, *, exact: bool = False, min_score: float | None = None,
                limit: int | None = None, **narrowing) -> list[SearchHit]:
    """The paths a query finds, best first (see the module docstring). `min_score`:
    the score a label match needs (None: DEFAULT_SEARCH_MIN_SCORE; callers that
    hold the settings pass `settings.search_min_score`, or the person's own). The
    narrowing options are `Narrowing`'s fields: tags, include_missing, and
    since/until (dates as `taken_window` reads them) and camera, which keep
    only photos whose EXIF says so."""
    reader = as_reader(source)
    return _search_hits(reader, select_classes(query, exact=exact),
                        matching_tag_keys(reader, query), min_score=_floor(min_score), limit=limit,
                        narrowing=_narrowing(narrowing))


def _floor(min_score: float | None) -> float:
    return DEFAULT_SEARCH_MIN_SCORE if min_score is None else min_score


def _narrowing(options: dict) -> Narrowing:
    options = dict(options)
    options["tags"] = tuple(options.get("tags") or ())
    return Narrowing(**options)


def find(source, query: str, *, exact: bool = False, min_score: float | None = None,
         limit: int | None = None, as_json: bool = False, **narrowing) -> SearchResult:
    """Records of the images a query finds, best first, with why each was found,
    and how many label matches the floor hid; when the query names no class and
    no tag, the nearest class names. With `as_json`, each record as the JSON text
    `--json` prints (store/recordjson.py), in `texts`. Other options as
    `search_hits`."""
    reader = as_reader(source)
    classes = select_classes(query, exact=exact)
    tag_keys = matching_tag_keys(reader, query)
    floor = _floor(min_score)
    options = {"min_score": floor, "limit": limit, "narrowing": _narrowing(narrowing)}
    with recordsql.collector_paused(), reader.read() as run:  # one snapshot
        if limit is not None and limit <= FEW:
            # The hits from the indexes alone, then the records of those alone: the
            # first page of 18,738 cats reads 61 records instead of joining every hit's
            # record and sorting them for 61 (1M images: 180 -> 80 ms CPU).
            by_label, by_tag = search_rows(run, classes, tag_keys, **options)
            rows = recordsql.rows_for_paths(run, [row[0] for row in by_label + by_tag])
        else:  # the hits and their records in one statement
            by_label, by_tag = search_rows(run, classes, tag_keys, columns=recordsql.RECORD_COLUMNS,
                                            joins=recordsql.RECORD_JOINS, **options)
            rows = by_label + by_tag
        hidden = hidden_count(run, classes, tag_keys, min_score=floor, narrowing=options["narrowing"])
        if as_json:
            found, texts = [], recordjson.record_json(run, rows)
        else:
            found, texts = recordsql.record_dicts(run, rows), None
    suggestions = suggest(query) if not classes and not tag_keys else []
    return SearchResult(found, classes, tag_keys, suggestions, texts, floor, hidden)


def search(source, query: str, **options) -> list[ImageRecord]:
    """Records of the images a query finds, best first. Options as `search_hits`."""
    return find(source, query, **options).records


__all__ = ["ALIVE_WITHIN_S", "STALE_NODE_S", "Narrowing", "SearchHit", "SearchResult", "Stats",
           "atomic_output", "find", "list_nodes", "matching_tag_keys", "photo_sql", "search",
           "search_hits", "service_status", "stats", "tag_counts", "tag_key", "taken_window",
           "watched_roots"]
