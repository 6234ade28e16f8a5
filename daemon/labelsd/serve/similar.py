"""`labels similar`: the photos whose content looks most like a photo's, best first,
each with its score (the cosine of the two stored vectors, -1..1).

The query is the photo's stored vector when the library holds it; any other image
file is embedded on the fly with the configured model (which loads the model
runtime: this command only). The scan is exact, over every vector of the query's
embedding space (labelsd.vectors.scan), read from the vector file (labelsd.vectors.library).
What a web page needs is one call: `similar_to_content(reader, sha256)` for a
photo page's "more like this" (the content itself left out), `similar(reader, path)`
for the command (the path itself left out; its exact copies elsewhere score 1).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from labelsd.errors import LabelsError, NotEmbeddedYet, NotTracked
from labelsd.serve.reader import as_reader, in_list
from labelsd.store import recordsql
from labelsd.vectors.spaces import Space, find_space

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
HOW_TO_EMBED = ("the service embeds labelled photos when it is idle (`labels status` shows how "
                "far it is), or run `labels scan` on their folder")


@dataclass
class SimilarResult:
    """What `similar` found: the records (the dicts `--json` prints) with a
    "similarity" each, best first, and the embedding space searched."""

    found: list[dict] = field(default_factory=list)
    space: Space | None = None
    embedded_on_the_fly: bool = False


def score_value(score: float) -> float:
    """A score as printed: within -1..1 (float rounding), 4 decimals."""
    return round(max(-1.0, min(1.0, score)), 4)


def open_vectors(reader, space: Space):
    """The space's vectors, in step with the database (labelsd.vectors.library)."""
    from labelsd.vectors import library

    with reader.read() as run:
        return library.load(run, space, library.location(reader.where, reader.dialect))


def stored_vector(reader, path: str) -> tuple[bytes, Space] | None:
    """The vector stored for the content at a tracked `path`, and its space; None when
    the path is not tracked. NotEmbeddedYet when its content has none yet."""
    from labelsd.paths import canonical_path

    with reader.read() as run:
        rows = run("SELECT p.sha256, c.status, e.vector, s.id, s.model, s.codec, s.token FROM paths p "
                   "LEFT JOIN contents c ON c.sha256 = p.sha256 "
                   "LEFT JOIN embeddings e ON e.sha256 = p.sha256 "
                   "LEFT JOIN embedding_spaces s ON s.id = e.space WHERE p.path = :path",
                   {"path": canonical_path(path)})
    if not rows:
        return None
    sha, status, vector, space_id, model, codec, token = rows[0]
    if vector is None and status == "failed":
        raise LabelsError(f"{canonical_path(path)} failed to decode (`labels show` says why): "
                          "it has no embedding")
    if vector is None:
        state = "has not been read yet" if sha is None else (
            "is not labelled yet" if status != "done" else "has no embedding yet")
        raise NotEmbeddedYet(f"{canonical_path(path)} {state}: {HOW_TO_EMBED}")
    return bytes(vector), Space(int(space_id), model, codec, token)


def embed_file(path: str, settings) -> tuple[bytes, str]:
    """An image file outside the library, embedded now with the configured model:
    (its vector, the model's stored name). ImageError (not an image) before any model
    is loaded; the model itself loads as `labels scan` loads it."""
    from labelsd.model import decode
    from labelsd.model.registry import get_model
    from labelsd.vectors import codec

    data = _read_image_file(path, decode.max_file_bytes())
    decoded = get_model(settings.model).decode(data)  # ImageError with the reason: no model loaded
    from labelsd.model.runtime import load_model

    classifier = load_model(settings.weights, settings.device, 1, settings.precision, warm=False,
                            model=settings.model)
    _, pooled = classifier.classify(decoded.pixels[None])
    if pooled is None:
        raise LabelsError(f"the model {classifier.name} gives no embedding")
    return codec.to_bytes(codec.encode(pooled)[0]), classifier.name


def _read_image_file(path: str, limit: int) -> bytes:
    """The bytes of a file the user named (links followed: it was named), if it is a
    regular file: a FIFO or a device is refused without blocking on it."""
    import stat

    from labelsd.fileio import kind_of

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotTracked(f"{path}: no such file") from None
    except OSError as err:
        raise LabelsError(f"cannot read {path}: {err.strerror or err}") from err
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise LabelsError(f"{path} is {kind_of(mode)}, not an image file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise LabelsError(f"{path} is larger than the {limit >> 20} MiB limit (max_file_mb)")
    return data


def similar(source, path: str, *, limit: int = DEFAULT_LIMIT, include_missing: bool = False,
            settings=None) -> SimilarResult:
    """The `limit` photos most like the one at `path` (a tracked photo, or any image
    file, embedded on the fly with `settings`' model), the path itself left out."""
    from labelsd.paths import canonical_path

    reader = as_reader(source)
    stored = stored_vector(reader, path)  # None: not tracked
    if stored is None and not os.path.exists(path):
        raise NotTracked(f"{path}: no such file")
    on_the_fly = stored is None
    if on_the_fly:
        if settings is None:
            raise NotTracked(f"{canonical_path(path)} is not in the library")
        vector, model = embed_file(path, settings)
        with reader.read() as run:
            space = find_space(run, model=model)
        if space is None:
            raise NotEmbeddedYet(f"the library holds no embedding of {model} yet: {HOW_TO_EMBED}")
    else:
        vector, space = stored
    result = nearest_records(reader, space, vector, limit, include_missing,
                             skip_path=None if on_the_fly else canonical_path(path))
    result.embedded_on_the_fly = on_the_fly
    return result


def similar_to_content(source, sha256: str, *, limit: int = DEFAULT_LIMIT,
                       include_missing: bool = False) -> SimilarResult:
    """A photo page's "more like this": the `limit` photos most like the content
    `sha256` (its own paths left out). NotEmbeddedYet when it has no vector yet."""
    reader = as_reader(source)
    with reader.read() as run:
        rows = run("SELECT e.vector, s.id, s.model, s.codec, s.token FROM embeddings e "
                   "JOIN embedding_spaces s ON s.id = e.space WHERE e.sha256 = :sha", {"sha": sha256})
    if not rows:
        raise NotEmbeddedYet(f"the photo {sha256[:12]}... has no embedding yet: {HOW_TO_EMBED}")
    vector, space_id, model, codec, token = rows[0]
    return nearest_records(reader, Space(int(space_id), model, codec, token), bytes(vector), limit,
                           include_missing, skip_sha=sha256)


def nearest_records(reader, space: Space, vector: bytes, limit: int, include_missing: bool,
                    skip_path: str | None = None, skip_sha: str | None = None) -> SimilarResult:
    """The records of the `limit` paths nearest to `vector` in `space`, best first."""
    from labelsd.vectors import codec, scan

    vectors = open_vectors(reader, space)
    all_scores = scan.scores(vectors, codec.unit(codec.from_bytes(vector)))
    found: list[dict] = []
    want = limit + 1
    while True:
        top = scan.top_rows(all_scores, want)
        shas = vectors.sha256_at(top)
        found = _records_of(reader, [(sha, float(all_scores[row])) for sha, row in zip(shas, top)
                                     if sha != skip_sha], include_missing, skip_path)
        if len(found) >= limit or want >= len(all_scores):
            return SimilarResult(found[:limit], space)
        want *= 4  # missing files and skipped paths left too few: look further


def _records_of(reader, scored: list[tuple[str, float]], include_missing: bool,
                skip_path: str | None) -> list[dict]:
    """The records of the paths of these contents, in their order (a content's paths
    by path), each with its content's score."""
    by_sha: dict[str, list[dict]] = {}
    with reader.read() as run:
        shas = [sha for sha, _ in scored]
        for start in range(0, len(shas), recordsql.CHUNK):
            params: dict = {}
            marks = in_list("s", shas[start:start + recordsql.CHUNK], params)
            sql = f"{recordsql.RECORD_SELECT} WHERE p.sha256 IN ({marks}) ORDER BY p.path"
            for rec in recordsql.record_dicts(run, run(sql, params)):
                by_sha.setdefault(rec["sha256"], []).append(rec)
    found = []
    for sha, score in scored:
        for rec in by_sha.get(sha, ()):
            if rec["path"] == skip_path or (rec["status"] == "missing" and not include_missing):
                continue
            found.append({**rec, "similarity": score_value(score)})
    return found


__all__ = ["DEFAULT_LIMIT", "SimilarResult", "embed_file", "nearest_records", "open_vectors",
           "score_value", "similar", "similar_to_content", "stored_vector"]
