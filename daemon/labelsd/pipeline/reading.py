"""Reading one claimed file for the pipeline: its bytes (once), size, mtime and
SHA-256, through the safe opener; and what a file that cannot be read becomes
(an outcome with its reason). The reader (reader.py) runs these on its pool."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from labelsd.errors import ImageError
from labelsd.fileio import FileTooLarge, open_regular
from labelsd.model.decode import max_file_bytes
from labelsd.records import Claim, Outcome, OutcomeKind
from labelsd.store import workqueue


def read_file(path: str, max_bytes: int | None = None,
              links_within: Sequence[str] = ()) -> tuple[bytes, int, int, str]:
    """The file's bytes (read once), size, mtime_ns and SHA-256. Only a regular
    file, opened without following symlinks (but to a target in `links_within`)
    or blocking (fileio.open_regular), and no larger than `max_bytes` (the size
    cap, read from decode by default)."""
    limit = max_file_bytes() if max_bytes is None else max_bytes
    fh, st = open_regular(path, max_bytes=limit, links_within=links_within)
    with fh:
        data = fh.read(limit + 1)  # the file may have grown since the fstat
    if len(data) > limit:
        raise FileTooLarge(f"file grew past the {limit >> 20} MiB limit (max_file_mb) while read")
    return data, st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest()


def read_failure(claim: Claim, err: BaseException) -> Outcome:
    """The outcome of a file that could not be read."""
    if isinstance(err, (FileNotFoundError, NotADirectoryError)):
        return Outcome(claim, OutcomeKind.VANISHED)
    if isinstance(err, ImageError):  # not a regular file, through a link, too large
        return failed_outright(claim, str(err))
    if isinstance(err, IsADirectoryError):
        return failed_outright(claim, "is a folder, not an image file")
    if isinstance(err, OSError):  # permission denied, I/O error: maybe better later
        return Outcome(claim, OutcomeKind.RETRY, error=f"cannot read the file: {err.strerror or err}")
    return Outcome(claim, OutcomeKind.RETRY, error=f"cannot read the file: {err}")


def failed_outright(claim: Claim, reason: str) -> Outcome:
    """The path (not its content: there is none to hash) fails now, with `reason`:
    a retry outcome with no attempts left, so the queue row ends `failed` at
    once and `labels retry` can queue it again."""
    return Outcome(replace(claim, attempts=max(claim.attempts, workqueue.MAX_ATTEMPTS - 1)),
                   OutcomeKind.RETRY, error=reason)


__all__ = ["failed_outright", "read_failure", "read_file"]
