"""Facts about a large file (its checksums, its layout) computed once, then remembered
while the file is unchanged, so a service start does not hash the model again.

Hashing the InceptionV3 weights (sha256 and md5, 92 MiB) and the converted `.tflite`
took 0.3 s of a 1.5-2 s LiteRT start on a loaded 2-core machine. The facts are
kept in the user's cache (`~/.cache/labels/digests.json`; the service's HOME is
its state folder) under the file's real path, with its device, inode, size,
mtime and ctime: any write to the file changes its ctime, which no one can set
back, so a changed file is always hashed again. Where the cache cannot be read or
written, the facts are computed every time, as before. The cache says what the
converted model's checksum is, so only the service may write it (labelsd.owned: 0600 in
a 0700 folder, and not read when someone else can have written it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from labelsd.owned import Untrusted, cache_dir, read_json, write_json
from labelsd.paths import shown

log = logging.getLogger(__name__)

MAX_ENTRIES = 64  # files remembered; the oldest are forgotten first
_lock = threading.Lock()


def cache_file() -> Path:
    return cache_dir() / "digests.json"


def _identity(path: Path, opened: BinaryIO | None = None) -> list[int]:
    st = os.fstat(opened.fileno()) if opened is not None else path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _save(cache: Path, entries: dict) -> None:
    try:
        write_json(cache, entries)
    except (OSError, Untrusted) as err:  # a read-only home: compute again next time
        log.debug("cannot remember file digests in %s: %s", shown(cache), err)


def remembered(path: str | os.PathLike, kind: str, compute: Callable[[Path], dict], *,
               opened: BinaryIO | None = None) -> dict:
    """`compute(path)` (a JSON-able dict), or what it returned before for this `kind` of
    facts while the file has not changed since. A file that cannot be stat'ed is left
    to `compute` (which says what is wrong with it). `opened`: the file, open (checked by
    the caller); its identity is read from it, and `compute` is to read it too."""
    path = Path(path)
    try:
        real = path.resolve()
        before = _identity(real, opened)
    except OSError:
        return compute(path)
    key = f"{kind}:{real}"
    cache = cache_file()
    with _lock:
        entry = read_json(cache).get(key)
    if isinstance(entry, dict) and entry.get("identity") == before and isinstance(entry.get("facts"), dict):
        return entry["facts"]
    facts = compute(path)
    try:
        unchanged = _identity(real, opened) == before  # not written while it was hashed
    except OSError:
        unchanged = False
    if unchanged:
        with _lock:
            entries = read_json(cache)
            entries.pop(key, None)
            entries[key] = {"identity": before, "facts": facts}
            _save(cache, dict(list(entries.items())[-MAX_ENTRIES:]))
    return facts


__all__ = ["MAX_ENTRIES", "cache_file", "remembered"]
