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
(grouped by content over the (class_index, score) index first, then joined to
the paths). A query also finds the images whose tags contain its words
("grandma" finds "Grandma's 90th"), compared as words in their base forms. A
tag match has no score, so those images rank after every label match (by
path), and `--min-score`, which filters on a label's score, leaves them out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from labelsd.fileio import atomic_output  # `labels export -o` writes through it
from labelsd.model.taxonomy import base_forms, select_classes, suggest
from labelsd.records import ImageRecord
from labelsd.serve.reader import as_reader, as_utc, in_list, where_shown

log = logging.getLogger(__name__)

ALIVE_WITHIN_S = 10.0  # as store.nodes.ALIVE_WITHIN_S (a test checks they agree)
STALE_NODE_S = 24 * 3600  # stopped nodes older than this are left out of `labels status`


def tag_key(tag: str) -> str:
    """The form tags are matched by (as store.tags.tag_key): trimmed, case-folded."""
    return tag.strip().casefold()


# ---- search ------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    path: str
    score: float | None  # best matching label score; None for a tag-only match


@dataclass
class SearchResult:
    """What a search found, and why: the classes and tags it matched (the CLI
    shows which label made each hit), and names to suggest when nothing did."""

    records: list[ImageRecord]
    classes: frozenset[int]
    tag_keys: tuple[str, ...]
    suggestions: list[str] = field(default_factory=list)

    def reason(self, rec: ImageRecord) -> str:
        """Which label (the best scoring matching one) or tag made this hit."""
        matching = [p for p in rec.labels if p.class_index in self.classes]
        if matching:
            best = max(matching, key=lambda p: p.score)
            return f"{best.label} {best.score:.0%}"
        tagged = [t for t in rec.tags if tag_key(t) in self.tag_keys]
        return f"tag {tagged[0]}" if tagged else ""


def _words(text: str) -> list[frozenset[str]]:
    """Each word of a text with its base forms ("Grandma's 90th" -> grandma, s, 90th)."""
    return [frozenset(base_forms(w)) for w in re.findall(r"\w+", text.casefold())]


def _has_run(words: list[frozenset[str]], run: list[frozenset[str]]) -> bool:
    n = len(run)
    return any(all(words[i + j] & run[j] for j in range(n)) for i in range(len(words) - n + 1))


def matching_tag_keys(reader, query: str) -> tuple[str, ...]:
    """The stored tag keys a query finds: the tag itself, or a tag whose words
    contain the query's words in order, each compared in its base forms."""
    key = tag_key(query)
    if not key:
        return ()
    run = _words(key)
    with reader.read() as run_sql:
        keys = [row[0] for row in run_sql("SELECT DISTINCT tag_key FROM tags", {})]
    return tuple(k for k in keys if k == key or (run and _has_run(_words(k), run)))


def _filters(sql: str, params: dict, tags: Iterable[str], include_missing: bool) -> str:
    for i, key in enumerate(dict.fromkeys(tag_key(t) for t in tags if t.strip())):
        params[f"tk{i}"] = key
        sql += f" AND EXISTS (SELECT 1 FROM tags t{i} WHERE t{i}.sha256 = p.sha256 AND t{i}.tag_key = :tk{i})"
    return sql if include_missing else sql + " AND NOT p.missing"


def _search_hits(reader, classes: frozenset[int], tag_keys: tuple[str, ...], *,
                 min_score: float | None, tags: Iterable[str], limit: int | None,
                 include_missing: bool) -> list[SearchHit]:
    tags = list(tags)
    if limit is not None and limit <= 0:
        return []
    hits: list[SearchHit] = []
    with reader.read() as run:
        if classes:
            params: dict = {}
            best = ("SELECT sha256, max(score) AS best FROM predictions WHERE class_index IN "
                    f"({in_list('c', sorted(classes), params)})")
            if min_score is not None:
                best += " AND score >= :min_score"
                params["min_score"] = min_score
            # A path waiting in the queue (changed, or failed since) has no
            # current labels: the stored ones describe older bytes.
            sql = (f"SELECT p.path, b.best FROM ({best} GROUP BY sha256) b "
                   "JOIN paths p ON p.sha256 = b.sha256 LEFT JOIN queue q ON q.path = p.path "
                   "WHERE q.id IS NULL")
            sql = _filters(sql, params, tags, include_missing) + " ORDER BY b.best DESC, p.path"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            hits = [SearchHit(path, score) for path, score in run(sql, params)]
        if tag_keys and min_score is None and (limit is None or len(hits) < limit):
            params = {}
            sql = ("SELECT DISTINCT p.path FROM paths p JOIN tags t ON t.sha256 = p.sha256 "
                   f"AND t.tag_key IN ({in_list('k', tag_keys, params)}) "
                   "LEFT JOIN queue q ON q.path = p.path WHERE 1 = 1")
            if classes:  # leave out what the label query above already found
                sql += (" AND (q.id IS NOT NULL OR NOT EXISTS (SELECT 1 FROM predictions r "
                        "WHERE r.sha256 = p.sha256 AND r.class_index IN "
                        f"({in_list('rc', sorted(classes), params)})))")
            sql = _filters(sql, params, tags, include_missing) + " ORDER BY p.path"
            if limit is not None:
                sql += f" LIMIT {int(limit - len(hits))}"
            hits += [SearchHit(path, None) for (path,) in run(sql, params)]
    return hits


def search_hits(source, query: str, *, exact: bool = False, min_score: float | None = None,
                tags: Iterable[str] = (), limit: int | None = None,
                include_missing: bool = False) -> list[SearchHit]:
    """The paths a query finds, best first (see the module docstring)."""
    reader = as_reader(source)
    return _search_hits(reader, select_classes(query, exact=exact),
                        matching_tag_keys(reader, query), min_score=min_score, tags=tags,
                        limit=limit, include_missing=include_missing)


def find(source, query: str, *, exact: bool = False, min_score: float | None = None,
         tags: Iterable[str] = (), limit: int | None = None,
         include_missing: bool = False) -> SearchResult:
    """Records of the images a query finds, best first, with why each was found;
    when the query names no class and no tag, the nearest class names."""
    reader = as_reader(source)
    classes = select_classes(query, exact=exact)
    tag_keys = matching_tag_keys(reader, query)
    hits = _search_hits(reader, classes, tag_keys, min_score=min_score, tags=tags,
                        limit=limit, include_missing=include_missing)
    records = reader.records_for_paths(hit.path for hit in hits)
    suggestions = suggest(query) if not classes and not tag_keys else []
    return SearchResult(records, classes, tag_keys, suggestions)


def search(source, query: str, **options) -> list[ImageRecord]:
    """Records of the images a query finds, best first. Options as `search_hits`."""
    return find(source, query, **options).records


# ---- stats and tags -------------------------------------------------------------


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
    first labels (counted over present, classified images)."""
    reader = as_reader(source)
    counts = reader.counts()
    with reader.read() as run:
        (contents,), = run("SELECT count(*) FROM contents", {})
        n_tags, tagged = run("SELECT count(DISTINCT tag_key), count(DISTINCT sha256) FROM tags", {})[0]
        top_labels = [(label, n) for label, n in run(
            "SELECT r.label, count(p.id) AS n FROM paths p JOIN predictions r "
            "ON r.sha256 = p.sha256 AND r.rank = 1 WHERE NOT p.missing "
            "GROUP BY r.label ORDER BY n DESC, r.label LIMIT :top", {"top": top})]
    return Stats(counts=counts, images=sum(counts.values()), contents=contents or 0,
                 tags=n_tags or 0, tagged_contents=tagged or 0, top_labels=top_labels)


def tag_counts(source) -> list[dict]:
    """Every tag with how many images carry it (copies count each) and on how
    many contents, most used first: [{"tag", "count", "contents"}]."""
    with as_reader(source).read() as run:
        rows = run("SELECT min(t.tag), count(p.id) AS n, count(DISTINCT t.sha256) FROM tags t "
                   "LEFT JOIN paths p ON p.sha256 = t.sha256 "
                   "GROUP BY t.tag_key ORDER BY n DESC, t.tag_key", {})
    return [{"tag": tag, "count": n, "contents": c} for tag, n, c in rows]


# ---- service status ------------------------------------------------------------


def list_nodes(source) -> list[dict]:
    """Every node ever registered, most recent heartbeat first."""
    import json
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    with as_reader(source).read() as run:
        rows = run("SELECT node_id, host, pid, model, device, watching, heartbeat_at, "
                   "stopped_at, done, failed FROM nodes", {})
    nodes = []
    for node_id, host, pid, model, device, watching, beat, stopped, done, failed in rows:
        beat = as_utc(beat)
        age = None if beat is None else max(0.0, (now - beat).total_seconds())
        nodes.append({"node_id": node_id, "host": host, "pid": pid, "device": device or "",
                      "model": model or "", "watching": json.loads(watching or "[]"),
                      "heartbeat_age_s": age,
                      "alive": stopped is None and age is not None and age <= ALIVE_WITHIN_S,
                      "done": done, "failed": failed})
    nodes.sort(key=lambda n: n["heartbeat_age_s"] if n["heartbeat_age_s"] is not None else 1e18)
    return nodes


def service_status(source, *, all_nodes: bool = False) -> dict:
    """`labels status --json`, the contract in DESIGN.md plus `database` and a
    `nodes` list (each node's `done`/`failed` count what it did since it started).

    `running` is true while some node is alive; pid, model, device, watching
    and heartbeat_age_s describe the freshest node (alive ones first), null or
    empty when no service ever registered. Nodes not heard from for a day are
    left out of `nodes` unless `all_nodes`."""
    reader = as_reader(source)
    nodes = list_nodes(reader)
    counts = reader.counts()
    freshest = sorted(nodes, key=lambda n: not n["alive"])[0] if nodes else None
    shown = [n for n in nodes if all_nodes or n["alive"] or (
        n["heartbeat_age_s"] is not None and n["heartbeat_age_s"] < STALE_NODE_S)]
    return {
        "running": any(n["alive"] for n in nodes),
        "pid": freshest["pid"] if freshest else None,
        "model": freshest["model"] if freshest else "",
        "device": freshest["device"] if freshest else "",
        "watching": list(freshest["watching"]) if freshest else [],
        "queued": counts["pending"],
        "done": counts["done"],
        "failed": counts["failed"],
        "missing": counts["missing"],
        "heartbeat_age_s": freshest["heartbeat_age_s"] if freshest else None,
        "database": where_shown(reader.where),
        "nodes": shown,
        "nodes_hidden": len(nodes) - len(shown),
    }


def watched_roots(source) -> list[str]:
    """The folders the live nodes watch (for explaining untracked paths)."""
    roots: list[str] = []
    for node in list_nodes(source):
        if node["alive"]:
            roots += [r for r in node["watching"] if r not in roots]
    return roots


__all__ = ["SearchHit", "SearchResult", "Stats", "atomic_output", "find", "list_nodes",
           "matching_tag_keys", "search", "search_hits", "service_status", "stats",
           "tag_counts", "watched_roots"]
