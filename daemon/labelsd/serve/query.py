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
path), and `--min-score`, which filters on a label's score, leaves them out.

A person's judgements (store/judgements.py) count everywhere: a rejected label
never finds its photo (a photo whose only cat label was rejected is not found
by `cat`; one with another cat label is, ranked by that one), and a photo found
by a confirmed label ranks before the rest (by that label's score).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

from labelsd.fileio import atomic_output  # `labels export -o` writes through it
from labelsd.model.taxonomy import select_classes, suggest
from labelsd.records import ImageRecord
from labelsd.serve.reader import as_reader, in_list
from labelsd.serve.stats import Stats, stats, tag_counts  # re-exported: the query API in one place
from labelsd.serve.status import (  # re-exported too
    ALIVE_WITHIN_S,
    STALE_NODE_S,
    list_nodes,
    service_status,
    watched_roots,
)
from labelsd.serve.tagmatch import label_keys, matching_tag_keys, tag_key  # re-exported
from labelsd.store import recordjson, recordsql
from labelsd.store.judgedsql import hidden_tag_sql

log = logging.getLogger(__name__)



# ---- search ------------------------------------------------------------------


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

    @cached_property
    def records(self) -> list[ImageRecord]:
        return [ImageRecord.from_dict(d) for d in self.found]

    def reason(self, rec: dict) -> str:
        """Which label (the best scoring matching one, a confirmed one first) or tag
        made this hit (`rec` as `ImageRecord.to_dict` gives it)."""
        matching = [p for p in rec["labels"] if p["class_index"] in self.classes]
        if matching:
            best = max(matching, key=lambda p: (p.get("confirmed", False), p["score"]))
            return f"{best['label']} {best['score']:.0%}" + (
                " (confirmed)" if best.get("confirmed") else "")
        tagged = [t for t in rec["tags"] if tag_key(t) in self.tag_keys]
        return f"tag {tagged[0]}" if tagged else ""


@dataclass(frozen=True)
class Narrowing:
    """What narrows a search besides its words: tags it must carry, whether
    missing files count, and the EXIF filters (`--since/--until/--camera`)."""

    tags: tuple[str, ...] = ()
    include_missing: bool = False
    since: str | None = None
    until: str | None = None
    camera: str | None = None

    def sql(self, params: dict) -> str:
        """` AND ...` conditions on the path `p` (its content as `p.sha256`)."""
        sql = ""
        for i, key in enumerate(dict.fromkeys(tag_key(t) for t in self.tags if t.strip())):
            params[f"tk{i}"] = key
            hidden = f" AND NOT {hidden_tag_sql(f't{i}')}" if key in label_keys() else ""
            sql += (f" AND EXISTS (SELECT 1 FROM tags t{i} WHERE t{i}.sha256 = p.sha256"
                    f" AND t{i}.tag_key = :tk{i}{hidden})")
        photo = photo_sql(params, self.since, self.until, self.camera)
        if photo:
            sql += f" AND p.sha256 IN (SELECT m.sha256 FROM contents m WHERE {photo})"
        return sql if self.include_missing else sql + " AND NOT p.missing"


def taken_window(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """`--since 2024-06 --until 2024-09` as bounds on `contents.taken_at` (ISO text):
    since the first moment of `since`, up to the last moment of `until` (a
    year, a month or a day: YYYY, YYYY-MM, YYYY-MM-DD). ValueError on other text."""
    return (_period(since)[0] if since else None), (_period(until)[1] if until else None)


def _period(text: str) -> tuple[str, str]:
    """[start, end) of a year, month or day, as ISO text."""
    from datetime import datetime, timedelta

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


def photo_sql(params: dict, since: str | None = None, until: str | None = None,
              camera: str | None = None) -> str:
    """Conditions on a content `m` for the EXIF filters ("" when none is given).
    The camera matches any part of make and model, case-insensitively (bound as
    a LIKE with its wildcards escaped, the same on SQLite and PostgreSQL)."""
    start, end = taken_window(since, until)
    conditions = []
    if start is not None:
        params["taken_from"] = start
        conditions.append("m.taken_at >= :taken_from")
    if end is not None:
        params["taken_to"] = end
        conditions.append("m.taken_at < :taken_to")
    if camera and camera.strip():
        escaped = "".join("/" + ch if ch in "/%_" else ch for ch in camera.strip().lower())
        params["camera"] = f"%{escaped}%"
        conditions.append("lower(m.camera) LIKE :camera ESCAPE '/'")
    return " AND ".join(conditions)


def _best_sql(classes: frozenset[int], params: dict, min_score: float | None) -> str:
    """(sha256, best, confirmed): each content whose labels match, with its best
    matching score, and whether a matching label is confirmed (then its best
    confirmed score). The contents with a judgement on a matching class (few: 1%
    of a library's photos judged adds 3% to `cat`'s statement) are worked out
    apart, their rejected labels left out; the rest come from the (class, score,
    content) index alone, as before judgements."""
    cls = in_list("c", sorted(classes), params)
    floor = ""
    if min_score is not None:
        params["min_score"] = min_score
        floor = " AND {}score >= :min_score"
    judged = f"SELECT sha256 FROM judgements WHERE class_index IN ({cls})"
    confirmed = "CASE WHEN j.verdict = 'confirmed' THEN 1 ELSE 0 END"
    return (f"SELECT sha256, best, 0 AS confirmed FROM (SELECT sha256, max(score) AS best "
            f"FROM predictions WHERE class_index IN ({cls}){floor.format('')} GROUP BY sha256) "
            f"AS plain WHERE sha256 NOT IN ({judged}) UNION ALL "
            f"SELECT r.sha256, CASE WHEN max({confirmed}) = 1 THEN max(CASE WHEN j.verdict = "
            f"'confirmed' THEN r.score END) ELSE max(r.score) END, max({confirmed}) "
            "FROM predictions r LEFT JOIN judgements j ON j.sha256 = r.sha256 "
            f"AND j.class_index = r.class_index WHERE r.sha256 IN ({judged}) "
            f"AND r.class_index IN ({cls}){floor.format('r.')} "
            "AND (j.verdict IS NULL OR j.verdict <> 'rejected') GROUP BY r.sha256")


def _search_rows(run, classes: frozenset[int], tag_keys: tuple[str, ...], *,
                 min_score: float | None, limit: int | None, narrowing: Narrowing,
                 columns: str = "p.path", joins: str = "") -> tuple[list, list]:
    """The rows a search finds, best first: (label matches, tag-only matches). Each
    row holds `columns` (over the path `p` and its queue row `q`, plus what `joins`
    adds); a label match's row ends with its best matching score. A rejected label
    finds nothing; a confirmed one ranks first."""
    if limit is not None and limit <= 0:
        return [], []
    by_label: list = []
    by_tag: list = []
    if classes:
        params: dict = {}
        # A path waiting in the queue (changed, or failed since) has no
        # current labels: the stored ones describe older bytes.
        sql = (f"SELECT {columns}, b.best FROM ({_best_sql(classes, params, min_score)}) b "
               f"JOIN paths p ON p.sha256 = b.sha256 LEFT JOIN queue q ON q.path = p.path{joins} "
               "WHERE q.id IS NULL")
        sql += narrowing.sql(params) + " ORDER BY b.confirmed DESC, b.best DESC, p.path"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        by_label = run(sql, params)
    if tag_keys and min_score is None and (limit is None or len(by_label) < limit):
        params = {}
        sql = (f"SELECT DISTINCT {columns} FROM paths p JOIN tags t ON t.sha256 = p.sha256 "
               f"AND t.tag_key IN ({in_list('k', tag_keys, params)}) "
               f"LEFT JOIN queue q ON q.path = p.path{joins} WHERE 1 = 1")
        if any(key in label_keys() for key in tag_keys):  # an imported keyword may be hidden
            sql += f" AND NOT {hidden_tag_sql('t')}"
        if classes:  # leave out what the label query above already found
            sql += (" AND (q.id IS NOT NULL OR NOT EXISTS (SELECT 1 FROM predictions r "
                    "WHERE r.sha256 = p.sha256 AND r.class_index IN "
                    f"({in_list('rc', sorted(classes), params)}) AND NOT EXISTS (SELECT 1 "
                    "FROM judgements j WHERE j.sha256 = r.sha256 AND j.class_index = "
                    "r.class_index AND j.verdict = 'rejected')))")
        sql += narrowing.sql(params) + " ORDER BY p.path"
        if limit is not None:
            sql += f" LIMIT {int(limit - len(by_label))}"
        by_tag = run(sql, params)
    return by_label, by_tag


def _search_hits(reader, classes: frozenset[int], tag_keys: tuple[str, ...],
                 **options) -> list[SearchHit]:
    with reader.read() as run:
        by_label, by_tag = _search_rows(run, classes, tag_keys, **options)
    return [SearchHit(path, score) for path, score in by_label] + [
        SearchHit(path, None) for (path,) in by_tag]


def search_hits(source, query: str, *, exact: bool = False, min_score: float | None = None,
                limit: int | None = None, **narrowing) -> list[SearchHit]:
    """The paths a query finds, best first (see the module docstring). The
    narrowing options are `Narrowing`'s fields: tags, include_missing, and
    since/until (dates as `taken_window` reads them) and camera, which keep
    only photos whose EXIF says so."""
    reader = as_reader(source)
    return _search_hits(reader, select_classes(query, exact=exact),
                        matching_tag_keys(reader, query), min_score=min_score, limit=limit,
                        narrowing=_narrowing(narrowing))


def _narrowing(options: dict) -> Narrowing:
    options = dict(options)
    options["tags"] = tuple(options.get("tags") or ())
    return Narrowing(**options)


def find(source, query: str, *, exact: bool = False, min_score: float | None = None,
         limit: int | None = None, as_json: bool = False, **narrowing) -> SearchResult:
    """Records of the images a query finds, best first, with why each was found;
    when the query names no class and no tag, the nearest class names. With
    `as_json`, each record as the JSON text `--json` prints (store/recordjson.py),
    in `texts`. Other options as `search_hits`."""
    reader = as_reader(source)
    classes = select_classes(query, exact=exact)
    tag_keys = matching_tag_keys(reader, query)
    # the hits and their records in one statement, one snapshot
    with recordsql.collector_paused(), reader.read() as run:
        by_label, by_tag = _search_rows(
            run, classes, tag_keys, min_score=min_score, limit=limit,
            narrowing=_narrowing(narrowing), columns=recordsql.RECORD_COLUMNS,
            joins=recordsql.RECORD_JOINS)
        if as_json:
            found, texts = [], recordjson.record_json(run, by_label + by_tag)
        else:
            found, texts = recordsql.record_dicts(run, by_label + by_tag), None
    suggestions = suggest(query) if not classes and not tag_keys else []
    return SearchResult(found, classes, tag_keys, suggestions, texts)


def search(source, query: str, **options) -> list[ImageRecord]:
    """Records of the images a query finds, best first. Options as `search_hits`."""
    return find(source, query, **options).records


__all__ = ["ALIVE_WITHIN_S", "STALE_NODE_S", "Narrowing", "SearchHit", "SearchResult", "Stats",
           "atomic_output", "find", "list_nodes", "matching_tag_keys", "photo_sql", "search",
           "search_hits", "service_status", "stats", "tag_counts", "tag_key", "taken_window",
           "watched_roots"]
