"""`labels duplicates`: groups of photos that are the same picture: exact copies (one
content, several paths) and near-duplicates (a resized, recompressed, cropped or
re-exported version, which SHA-256 cannot see: stored vectors at or above a cosine
threshold).

Every pair of vectors of the embedding space is compared, exactly, block by block
(labelsd.vectors.scan.pairs_above: memory stays flat whatever the library's size);
pairs join into groups (a union-find over contents: A like B and B like C make
one group). A group lists its members (each path: its content, file size and pixel
size, and its score against the group's first member, the largest in pixels then in
bytes), with exact copies marked. One call for a web page too: `find_duplicates(reader)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from labelsd.errors import ConfigError
from labelsd.serve.reader import as_reader, in_list
from labelsd.serve.similar import open_vectors, score_value
from labelsd.store import recordsql
from labelsd.vectors.spaces import Space, find_space

log = logging.getLogger(__name__)

# Measured on EfficientNet-Lite0's vectors of scikit-image's photos (tests/test_similar_real.py):
# a half-size copy, a quality-60 recompression, a 90% centre crop and a PNG re-export
# of a photo scored 0.88 to 1.00 against it; two photos of one scene from a step apart
# (a stereo pair) 0.94; a close-up crop of a quarter of a photo 0.85; unrelated photos
# 0.52 at most, most of them under 0.3.
DEFAULT_THRESHOLD = 0.86


@dataclass
class Duplicates:
    groups: list[dict] = field(default_factory=list)
    space: Space | None = None  # None: the library has no vectors yet (exact copies only)
    compared: int = 0  # vectors compared


def find_duplicates(source, *, threshold: float = DEFAULT_THRESHOLD, include_missing: bool = False,
                    family: str | None = None,
                    progress: Callable[[int, int], None] | None = None) -> Duplicates:
    """Every group of exact copies and near-duplicates, largest first. The vectors
    compared are those of the fullest embedding space of `family` (the configured
    model's), else of any model. `progress(done, total)` is called as the comparison
    goes (scan.pairs_above); what it raises ends it (a web page no one waits for)."""
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"the threshold must be between 0 and 1, not {threshold}")
    reader = as_reader(source)
    with reader.read() as run:
        space = find_space(run, family=family) or find_space(run)
        copies = _copied_contents(run, include_missing)
    parent: dict[str, str] = {sha: sha for sha in copies}
    vectors = open_vectors(reader, space) if space is not None else None
    if vectors is not None and len(vectors):
        from labelsd.vectors import scan

        shas = vectors.field("sha")
        for rows_i, rows_j, _ in scan.pairs_above(vectors, threshold, progress=progress):
            for i, j in zip(rows_i.tolist(), rows_j.tolist()):
                _union(parent, shas[i].tobytes().hex(), shas[j].tobytes().hex())
    groups: dict[str, list[str]] = {}
    for sha in parent:
        groups.setdefault(_root(parent, sha), []).append(sha)
    found = _group_records(reader, [g for g in groups.values()], include_missing, vectors)
    return Duplicates(found, space, len(vectors) if vectors is not None else 0)


def library_state(source) -> tuple:
    """What `find_duplicates`' answer depends on, read cheaply (counters and one index
    step, the same cost at any size): how many paths are in each status, and each
    embedding space's vector count and highest id. A result found when the state was
    another may be out of date (a web page keeps results: labelsd.web.dupjobs)."""
    from labelsd.vectors.spaces import count, spaces

    reader = as_reader(source)
    counts = reader.counts()
    with reader.read() as run:
        held = tuple((s.id, count(run, s)) for s in spaces(run))
        highest = run("SELECT max(id) FROM embeddings", {})[0][0]
    return tuple(sorted(counts.items())), held, int(highest or 0)


def _root(parent: dict[str, str], sha: str) -> str:
    while parent[sha] != sha:
        parent[sha] = parent[parent[sha]]
        sha = parent[sha]
    return sha


def _union(parent: dict[str, str], a: str, b: str) -> None:
    parent.setdefault(a, a)
    parent.setdefault(b, b)
    ra, rb = _root(parent, a), _root(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


def _copied_contents(run, include_missing: bool) -> list[str]:
    """Contents with more than one path (present ones, unless `include_missing`)."""
    present = "" if include_missing else " WHERE NOT missing"
    return [sha for (sha,) in run(f"SELECT sha256 FROM paths{present} GROUP BY sha256 "
                                  "HAVING count(*) > 1 AND sha256 IS NOT NULL", {})]


def _group_records(reader, groups: list[list[str]], include_missing: bool, vectors) -> list[dict]:
    """Each group of contents as its members (paths), largest first; groups of fewer
    than two members (a content whose other paths are missing) left out."""
    wanted = [sha for group in groups for sha in group]
    members: dict[str, list[dict]] = {}
    with reader.read() as run:
        for start in range(0, len(wanted), recordsql.CHUNK):
            params: dict = {}
            marks = in_list("s", wanted[start:start + recordsql.CHUNK], params)
            missing = "" if include_missing else " AND NOT p.missing"
            for path, sha, size, width, height, status in run(
                    "SELECT p.path, p.sha256, c.size, c.width, c.height, c.status FROM paths p "
                    f"JOIN contents c ON c.sha256 = p.sha256 WHERE p.sha256 IN ({marks}){missing} "
                    "ORDER BY p.path", params):
                members.setdefault(sha, []).append(
                    {"path": path, "sha256": sha, "bytes": size, "width": width, "height": height,
                     "status": status})
    codes = _codes_of(vectors, wanted)
    found = []
    for group in groups:
        paths = [m for sha in group for m in members.get(sha, ())]
        if len(paths) < 2:
            continue
        paths.sort(key=lambda m: (-(m["width"] or 0) * (m["height"] or 0), -(m["bytes"] or 0), m["path"]))
        first = paths[0]["sha256"]
        for m in paths:
            m["similarity"] = _similarity(codes, first, m["sha256"])
            m["exact_copy"] = sum(o["sha256"] == m["sha256"] for o in paths) > 1
        found.append({"count": len(paths), "exact": len(group) == 1, "members": paths})
    found.sort(key=lambda g: (-g["count"], g["members"][0]["path"]))
    return found


def _codes_of(vectors, shas: list[str]) -> dict[str, object]:
    """The stored codes of these contents (those without one left out)."""
    if vectors is None or not shas:
        return {}
    return {r["sha"].tobytes().hex(): r["code"] for r in vectors.at(vectors.rows_of(shas))}


def _similarity(codes: dict, a: str, b: str) -> float | None:
    if a == b:
        return 1.0
    if a not in codes or b not in codes:
        return None
    from labelsd.vectors.codec import cosine

    return score_value(cosine(codes[a], codes[b]))


__all__ = ["DEFAULT_THRESHOLD", "Duplicates", "find_duplicates", "library_state"]
