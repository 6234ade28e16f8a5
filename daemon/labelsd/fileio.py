"""Writing an output file atomically: shared by `labels export -o` (text) and
the contact sheets of `labels gallery` (bytes)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w",
                  encoding: str = "utf-8") -> Iterator[IO]:
    """A file that appears at `path` only when the block succeeds: written
    beside it under a temporary name, flushed to disk, then renamed over it.
    On error the temporary file is removed and `path` is left as it was.
    `mode` is "w" (text in `encoding`, newlines as written) or "wb" (bytes)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output writes with mode 'w' or 'wb', not {mode!r}")
    target = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.part")
    # 0o666 through the umask, as any file a person writes (mkstemp would give 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    text = {"encoding": encoding, "newline": ""} if mode == "w" else {}
    try:
        with os.fdopen(fd, mode, **text) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


__all__ = ["atomic_output"]
