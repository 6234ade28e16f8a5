"""One photo by its content: what `labels serve` shows at /photo/<sha256> and
serves at /thumb/<sha256>. A content hash names a photo there, never a path.

`content_records` reads the records of every path holding a content (copies,
a moved file's old path while it is missing) with the record SQL the rest of
the query commands use (store/recordsql.py), over the (sha256, missing) index
of paths: one index range, at any library size.
"""

from __future__ import annotations

import re
from itertools import islice

from labelsd.serve.reader import as_reader
from labelsd.store import recordsql

SHA256_TEXT = re.compile(r"[0-9a-f]{64}")


def is_content_hash(text: str) -> bool:
    """Whether `text` is a content hash as labelsd stores them (64 lower-case hex digits)."""
    return SHA256_TEXT.fullmatch(text) is not None


def content_records(source, sha256: str) -> list[dict]:
    """The records (the dicts `--json` prints) of every tracked path holding the
    content `sha256`, present paths first, each group by path; [] for a hash the
    library does not hold (or text that is no hash)."""
    if not is_content_hash(sha256):
        return []
    with recordsql.collector_paused(), as_reader(source).read() as run:
        rows = run(recordsql.RECORD_SELECT + " WHERE p.sha256 = :sha ORDER BY p.missing, p.path",
                   {"sha": sha256})
        return recordsql.record_dicts(run, rows)


def failed_records(source, limit: int) -> list[dict]:
    """Up to `limit` failed images (`labels list --status failed`), ordered by path."""
    return list(islice(as_reader(source).record_dicts(status="failed", chunk=limit), limit))


__all__ = ["content_records", "failed_records", "is_content_hash"]
