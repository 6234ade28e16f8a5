"""A library's vectors for a scan: the embedding spaces a database holds, and one
space's vectors as a `VectorSet`, read from the vector file (labelsd.vectors.matrix)
and brought in step with the database first.

Where the file lives: beside a SQLite database (`labels.db.vectors`, with the
database file's own mode, so a library shared with a group is shared whole; the
service keeps it current, labelsd.vectors.keeper), or, where that folder may not
be written and no file is there yet, and for PostgreSQL (no file beside a
server), in the user's cache (`~/.cache/labels/vectors/`, named by the database).

Bringing it in step (`load`) costs two small queries when nothing changed: how
many vectors the space has (a counter the triggers keep) and the highest id. Rows written since (a higher id)
are read and appended; when the count still differs (vectors deleted, or, on
PostgreSQL, a row committed after a higher id was), the ids alone are compared and
only the difference read. A file that is missing, damaged or made from another
database is rebuilt from the rows. Whatever cannot be written (a folder or file
this user may not write, a full disk) is kept in memory for this scan only.

Plain SQL through `run(sql, params) -> rows` (serve/reader.py's readers and a
Store's session alike): no SQLAlchemy here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labelsd.paths import shown
from labelsd.vectors import matrix
from labelsd.vectors.codec import DIM, inverse_norms
from labelsd.vectors.matrix import RECORD, Header
from labelsd.vectors.spaces import Space, count, find_space, progress, spaces  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

FETCH_ROWS = 50_000  # rows per query while catching up (keyset pages: never OFFSET)


# ---- where the file is ----------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a database's vector files go, one file per space: `beside` the SQLite
    file (`labels.db.vectors1` for space 1; may not be writable), else in `cached`
    (the user's cache), each with the mode new files get there."""

    beside: Path | None
    cached: Path
    beside_mode: int = 0o600

    def candidates(self, space: Space) -> list[tuple[Path, int]]:
        """(file, mode for a new one), beside the database first."""
        found = [(self.beside.with_name(f"{self.beside.name}{space.id}"), self.beside_mode)] if self.beside else []
        return found + [(self.cached.with_name(f"{self.cached.name}.vectors{space.id}"), 0o600)]


def _cache_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("labels")) / "vectors"


def location(where: str, dialect: str) -> Location:
    """The vector files of the database `where` (a SQLite path, or a URL)."""
    if dialect == "sqlite":
        db = Path(os.path.realpath(os.path.expanduser(where)))
        from labelsd.store.access import database_file_mode

        try:
            mode = database_file_mode(db.parent)
        except OSError:
            mode = 0o600
        key = hashlib.sha256(str(db).encode()).hexdigest()[:16]
        return Location(db.with_name(db.name + ".vectors"), _cache_root() / f"sqlite-{key}", mode)
    shown = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1@", where)  # never the password in a name
    return Location(None, _cache_root() / f"db-{hashlib.sha256(shown.encode()).hexdigest()[:16]}")


# ---- a space's vectors ------------------------------------------------------------


@dataclass
class VectorSet:
    """One space's vectors as parts of RECORD arrays (the mapped file, then what was
    read from the database since). Row i of the set is row i of the parts laid end
    to end."""

    space: Space
    parts: list[np.ndarray] = field(default_factory=list)
    path: Path | None = None  # the file it was read from, if any

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def field(self, name: str) -> np.ndarray:
        """One field of every row, as one array (a copy: small fields only)."""
        return np.concatenate([p[name] for p in self.parts]) if self.parts else np.empty(0, RECORD[name])

    def at(self, rows) -> np.ndarray:
        """The records of these rows (a copy of those only), in the order given."""
        rows = np.asarray(rows, np.int64)
        out = np.empty(len(rows), RECORD)
        offset = 0
        for part in self.parts:
            inside = (rows >= offset) & (rows < offset + len(part))
            out[inside] = part[rows[inside] - offset]
            offset += len(part)
        return out

    def sha256_at(self, rows) -> list[str]:
        return [sha.tobytes().hex() for sha in self.at(rows)["sha"]]

    def rows_of(self, shas: list[str]) -> np.ndarray:
        """The rows holding these contents (SHA-256 hex), in row order."""
        if not shas or not len(self):
            return np.empty(0, np.int64)
        wanted = np.frombuffer(bytes.fromhex("".join(shas)), np.uint8).reshape(-1, 32)
        prefix = np.ascontiguousarray(wanted[:, :8]).view(np.uint64).ravel()
        found, offset = [], 0
        for part in self.parts:
            keys = np.ascontiguousarray(part["sha"][:, :8]).view(np.uint64).ravel()
            found.append(np.flatnonzero(np.isin(keys, prefix)) + offset)
            offset += len(part)
        rows = np.concatenate(found)
        exact = set(shas)  # a prefix is 64 bits: check the whole key
        return rows[[sha in exact for sha in self.sha256_at(rows)]] if len(rows) else rows


def _records(rows: list[tuple]) -> np.ndarray:
    """Database rows (id, sha256 hex, vector bytes) as RECORDs."""
    out = np.empty(len(rows), RECORD)
    if not rows:
        return out
    out["id"] = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    out["sha"] = np.frombuffer(bytes.fromhex("".join(r[1] for r in rows)), np.uint8).reshape(len(rows), 32)
    codes = np.frombuffer(b"".join(bytes(r[2]) for r in rows), np.int8)
    if codes.size != len(rows) * DIM:
        raise ValueError("a stored vector of the wrong size")
    out["code"] = codes.reshape(len(rows), DIM)
    out["inv_norm"] = inverse_norms(out["code"])
    return out


def _pages_after(run, space: Space, after: int) -> Iterator[np.ndarray]:
    """The space's rows with an id above `after`, in id order, a page at a time."""
    while True:
        rows = run("SELECT id, sha256, vector FROM embeddings WHERE space = :space AND id > :after "
                   "ORDER BY id LIMIT :n", {"space": space.id, "after": after, "n": FETCH_ROWS})
        if rows:
            yield _records(rows)
        if len(rows) < FETCH_ROWS:
            return
        after = int(rows[-1][0])


def _rows_after(run, space: Space, after: int) -> np.ndarray:
    parts = list(_pages_after(run, space, after))
    return np.concatenate(parts) if parts else np.empty(0, RECORD)


def _rows_by_id(run, space: Space, ids: np.ndarray) -> np.ndarray:
    parts = [np.empty(0, RECORD)]
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start:start + 500]]
        marks = ", ".join(f":i{n}" for n in range(len(chunk)))
        rows = run(f"SELECT id, sha256, vector FROM embeddings WHERE space = :space AND id IN ({marks})",
                   {"space": space.id, **{f"i{n}": v for n, v in enumerate(chunk)}})
        parts.append(_records(rows))
    return np.concatenate(parts)


def _open_existing(where: Location, space: Space) -> matrix.MappedFile | None:
    for path, _mode in where.candidates(space):
        found = matrix.open_file(path, space.id, space.token)
        if found is not None:
            return found
    return None


def load(run, space: Space, where: Location | None, *, persist: bool = True) -> VectorSet:
    """`space`'s vectors, in step with the database `run` reads (see the module's doc).
    `where` None: in memory only (nothing read from or written to a file)."""
    total = count(run, space)
    highest = int(run("SELECT max(id) FROM embeddings WHERE space = :space", {"space": space.id})[0][0] or 0)
    mapped = _open_existing(where, space) if where is not None else None
    if mapped is not None and mapped.header.max_id > highest:
        mapped = None  # a file newer than the database (a restored backup): rebuilt
    if mapped is None and where is not None and persist and total:
        mapped = _rebuild(run, space, where)  # streamed into a file: memory stays flat
    base = mapped.records if mapped is not None else np.empty(0, RECORD)
    new = _rows_after(run, space, mapped.header.max_id if mapped else 0) if total else np.empty(0, RECORD)
    dead = np.empty(0, np.int64)
    if len(base) + len(new) != total:
        ids = np.array([r[0] for r in run("SELECT id FROM embeddings WHERE space = :space",
                                          {"space": space.id})], np.int64)
        have = np.concatenate([base["id"], new["id"]])
        missing = np.setdiff1d(ids, have, assume_unique=True)
        dead = np.setdiff1d(have, ids, assume_unique=True)
        new = np.concatenate([new, _rows_by_id(run, space, missing)])
        log.info("vector file of %s: %d row(s) added out of order, %d gone", space.model,
                 len(missing), len(dead))
    vectors = VectorSet(space, [p for p in (base, new) if len(p)], mapped.path if mapped else None)
    if len(dead):
        vectors.parts = [p[~np.isin(p["id"], dead)] for p in vectors.parts]
    if where is not None and persist and (len(new) or len(dead)):
        _persist(vectors, where, mapped, new, rewrite=mapped is None or bool(len(dead)))
    return vectors


def _rebuild(run, space: Space, where: Location) -> matrix.MappedFile | None:
    """The space's file written anew from the database, page by page; None where it
    cannot be written (the scan then reads the rows into memory)."""
    target = None
    try:
        target = _writable_target(where, space)
        modes = dict(where.candidates(space))
        matrix.write_file(target, Header(space.id, space.token), _pages_after(run, space, 0),
                          modes.get(target, 0o600))
    except OSError as err:
        log.info("cannot write the vector file %s (%s): reading the vectors into memory",
                 shown(target) if target else "-", err.strerror or err)
        return None
    return matrix.open_file(target, space.id, space.token)


def _persist(vectors: VectorSet, where: Location, mapped, new: np.ndarray, rewrite: bool) -> None:
    """Keep what was read for the next scan: append to the mapped file, or write one."""
    try:
        if not rewrite:
            # False: another process appended (or rebuilt it) meanwhile, and has what we read
            matrix.append(mapped.path, mapped.header, new)
            return
        modes = dict(where.candidates(vectors.space))
        target = mapped.path if mapped is not None else _writable_target(where, vectors.space)
        matrix.write_file(target, Header(vectors.space.id, vectors.space.token), vectors.parts,
                          modes.get(target, 0o600))
        vectors.path = target
    except OSError as err:  # a read-only folder, a full disk: this scan is still whole
        log.info("cannot keep the vector file (%s); it is read from the database again next time",
                 err.strerror or err)


def _writable_target(where: Location, space: Space) -> Path:
    """Beside the database where its folder may be written, else the user's cache."""
    (beside, _), *rest = where.candidates(space)
    if where.beside is not None and os.access(beside.parent, os.W_OK | os.X_OK):
        return beside
    cached = rest[0][0] if rest else beside
    cached.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return cached


__all__ = ["Location", "Space", "VectorSet", "count", "find_space", "load", "location", "progress",
           "spaces"]
