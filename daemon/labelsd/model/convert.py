"""The Keras model converted to a `.tflite` once, for LiteRT, and kept next to its weights.

Converting needs TensorFlow, and a process that has imported TensorFlow keeps its
~600 MiB; so the conversion runs in a child process (`python -m
labelsd.model.converter`, the child's side), and the service that asked for it never
imports TensorFlow. The result is cached next to the weights file where that folder is the
service's own to write (no one else may), else in the user's cache, named by the
weights' file name, the model, the precision and the weights' checksum (SHA-256; keras'
MD5 for the official InceptionV3 file, which keras verifies by it); a JSON file beside it
records what it was made from and its own SHA-256. A cached file is used only when that
record matches (same weights checksum, model, precision, CONVERSION_FORMAT and the
precision's recipe, RECIPES) and the file's bytes hash to what it says: a truncated or
corrupt file, a leftover of an older conversion, or a file without its record is
converted again. A new conversion removes the files it made earlier for other checksums
of the same weights file.

The record vouches for the file only because no one but the service (and root) can
write either (labelsd.owned): the folders are 0700 and the files 0600 whatever the
umask, a file or folder someone else can have written is refused (said once at
WARNING) and converted again, and LiteRT loads the very file that was checked
(`opened_tflite`), not whatever the name holds a moment later.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from labelsd import owned
from labelsd.errors import ConversionFailed
from labelsd.fileio import file_sha256
from labelsd.model import digests, quantize  # quantize.RECIPE: how int8 is made, in the record
from labelsd.paths import shown

log = logging.getLogger(__name__)

# Bump when the converted graph changes (ops, output, quantisation), so older files are redone.
# 2: the pooled embedding is a second output, beside the probabilities (which stay first).
CONVERSION_FORMAT = 2
CONVERT_TIMEOUT_S = 1800  # a 2-core machine under load took ~1 min for fp32 InceptionV3
LITERT_PRECISIONS = ("fp32", "int8")  # int8: dynamic-range (int8 weights, float activations)
# How each precision is made, recorded with the file: a file made by another recipe (the
# int8 of an older labelsd: TensorFlow's Optimize.DEFAULT) is converted again. fp32 is
# the plain conversion, recorded as no recipe, as it was before recipes were recorded.
RECIPES = {"fp32": None, "int8": quantize.RECIPE}


def _inside_python(path: Path) -> bool:
    """Whether `path` lies in this Python's installation (weights a package ships)."""
    try:
        path.resolve().relative_to(Path(sys.prefix).resolve())
    except ValueError:
        return False
    return True


def _services_own(folder: Path) -> bool:
    """Whether the service may keep what it runs in `folder`: it writes it, no one else
    can, and no folder on the way is someone else's (labelsd.owned)."""
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        return False
    try:
        owned.check_folder(folder)
    except (owned.Untrusted, OSError):
        return False
    return True


def cache_folder(weights_path: Path) -> Path:
    """Next to the weights where that folder is the service's own to write, else the
    user's cache (made the service's alone); never inside an installed package (pip
    would neither know nor remove the file). Where the user's cache belongs to someone
    else, a folder of this process's: converted at each start (said once at WARNING)."""
    if _services_own(weights_path.parent) and not _inside_python(weights_path.parent):
        return weights_path.parent
    cache = owned.cache_dir() / "tflite"
    try:
        owned.private_folder(cache.parent)
        return owned.private_folder(cache)
    except owned.Untrusted as err:
        owned.say_once(f"untrusted {err.path}", (
            f"not keeping converted models in {shown(cache)}: {shown(err.path)} {err.reason}, "
            "and whoever can write it could choose the model the service runs; converting into "
            f"a temporary folder at each start instead (remove {shown(err.path)}: the service "
            "makes its own)"))
        return owned.scratch_folder()


def cache_paths(weights_path: Path, checksum: str, model: str, precision: str) -> tuple[Path, Path]:
    """(the .tflite, its JSON record) for these weights, model and precision."""
    stem = f"{weights_path.name}.{model}.{precision}"
    tflite = cache_folder(weights_path) / f"{stem}.{checksum[:16]}.tflite"
    return tflite, tflite.with_name(tflite.name + ".json")


def _record(checksum: str, model: str, precision: str) -> dict:
    return {"format": CONVERSION_FORMAT, "weights_checksum": checksum, "model": model,
            "precision": precision, "recipe": RECIPES[precision]}


def _open_cached(tflite: Path, meta: Path, want: dict) -> BinaryIO | None:
    """The cached file, open, when only the service can have written it and its record,
    and it is whole and made as `want` says; else None (and a file someone else can
    have written is removed, said once at WARNING)."""
    try:
        with owned.open_trusted(meta) as f:
            record = json.load(f)
        opened = owned.open_trusted(tflite)
    except FileNotFoundError:
        if tflite.is_file():
            log.info("cached %s has no record: converting again", shown(tflite.name))
        return None
    except owned.Untrusted as err:
        owned.say_once(f"untrusted {err.path}", f"not using the cached model {shown(tflite)}: "
                       f"{shown(err.path)} {err.reason}; converting it again")
        with suppress(OSError):  # not the service's folder: the conversion goes elsewhere or fails
            discard(tflite)
        return None
    except (OSError, ValueError):
        log.info("cached %s has no readable record: converting again", shown(tflite.name))
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in want.items()):
        log.info("cached %s was made from other weights or by another recipe (an older "
                 "labelsd): converting again", shown(tflite.name))
        opened.close()
        return None
    size = os.fstat(opened.fileno()).st_size
    if record.get("tflite_size") != size or record.get("tflite_sha256") != digests.remembered(
            tflite, "sha256", lambda _path: {"sha256": file_sha256(opened)}, opened=opened)["sha256"]:
        log.info("cached %s is damaged (its checksum does not match): converting again", shown(tflite.name))
        opened.close()
        return None
    return opened


def cached_tflite(weights_path: Path, checksum: str, model: str, precision: str) -> Path | None:
    """The cached .tflite when it is whole, was made from these weights and only the
    service can have written it, else None."""
    tflite, meta = cache_paths(weights_path, checksum, model, precision)
    opened = _open_cached(tflite, meta, _record(checksum, model, precision))
    if opened is None:
        return None
    opened.close()
    return tflite


def discard(tflite: Path) -> None:
    """Remove a cached file and its record (e.g. when LiteRT cannot load it)."""
    for path in (tflite, tflite.with_name(tflite.name + ".json")):
        path.unlink(missing_ok=True)


def ensure_tflite(weights_path: Path, checksum: str, model: str, precision: str) -> Path:
    """The .tflite for these weights: the cached one, or converted now in a child process."""
    with opened_tflite(weights_path, checksum, model, precision) as (tflite, _source):
        return tflite


@contextmanager
def opened_tflite(weights_path: Path, checksum: str, model: str,
                  precision: str) -> Iterator[tuple[Path, str]]:
    """(the .tflite, a path to load it by) for these weights, converted first where
    needed. The second names the very file that was checked, while the block runs: the
    one to hand LiteRT."""
    if precision not in LITERT_PRECISIONS:
        raise ConversionFailed(f"no LiteRT conversion for precision {precision!r}")
    tflite, meta = cache_paths(weights_path, checksum, model, precision)
    want = _record(checksum, model, precision)
    opened = _open_cached(tflite, meta, want)
    if opened is None:
        # Services started together (several nodes on one machine) convert once: the
        # others wait on the lock and then find the file.
        fd = os.open(tflite.with_name(f".{tflite.name}.lock"),
                     os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            opened = _open_cached(tflite, meta, want)
            if opened is None:
                _convert(weights_path, checksum, model, precision)
                opened = _open_cached(tflite, meta, want)
        if opened is None:
            raise ConversionFailed(f"the converted model {shown(tflite)} changed as soon as it was made")
    with opened:
        yield tflite, owned.fd_path(opened, tflite)


def _convert(weights_path: Path, checksum: str, model: str, precision: str) -> Path:
    tflite, meta = cache_paths(weights_path, checksum, model, precision)
    tmp = tflite.with_name(f".{tflite.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # the child writes into it
    cmd = [sys.executable, "-m", "labelsd.model.converter", "--weights", str(weights_path),
           "--model", model, "--precision", precision, "--out", str(tmp)]
    log.info("converting %s to a %s .tflite for LiteRT (once; TensorFlow runs in a child "
             "process)", shown(weights_path.name), precision)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, umask=0o077)
    except subprocess.TimeoutExpired as err:
        tmp.unlink(missing_ok=True)
        raise ConversionFailed(f"converting to .tflite took over {CONVERT_TIMEOUT_S} s") from err
    if proc.returncode != 0 or not tmp.is_file() or not tmp.stat().st_size:
        tmp.unlink(missing_ok=True)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise ConversionFailed(f"converting to .tflite failed (exit {proc.returncode}: "
                               f"{lines[-1][:300] if lines else 'no output'})")
    tflite = install(tmp, weights_path, checksum, model, precision)
    log.info("converted in %.0f s: %s (%.0f MB)", time.perf_counter() - start, shown(tflite),
             tflite.stat().st_size / 1e6)
    return tflite


def install(tmp: Path, weights_path: Path, checksum: str, model: str, precision: str) -> Path:
    """Move a converted file made by a child into the cache, with its record."""
    tflite, meta = cache_paths(weights_path, checksum, model, precision)
    record = _record(checksum, model, precision)
    record.update(tflite_size=tmp.stat().st_size, tflite_sha256=file_sha256(tmp))
    tmp.replace(tflite)
    meta_tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    with open(os.open(meta_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as out:
        out.write(json.dumps(record, indent=1))
    meta_tmp.replace(meta)  # last: a file without its record is never taken as good
    _remove_stale(tflite, weights_path, model, precision)
    return tflite


def _remove_stale(current: Path, weights_path: Path, model: str, precision: str) -> None:
    """Files made earlier from other contents of the same weights file."""
    for old in current.parent.glob(f"{weights_path.name}.{model}.{precision}.*.tflite"):
        if old != current:
            log.info("removing %s (made from an earlier version of %s)", shown(old.name),
                     shown(weights_path.name))
            discard(old)
