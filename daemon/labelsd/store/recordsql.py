"""Image records from the database: the SQL and the row-to-record assembly, once.

Two readers run it, each with its own connection: the service's `Store`
(SQLAlchemy; PostgreSQL, and the service on SQLite) and the query commands'
read-only `Reader` (serve/reader.py: the standard library's sqlite3, so that
`labels search` never pays for importing SQLAlchemy). Both hand it a
`run(sql, params) -> list of row tuples` over one read transaction. This module
imports no SQLAlchemy for that reason.

The SQL is plain text in the dialect both databases share, with `:name`
parameters (sqlite3 and SQLAlchemy's `text()` both take them). Labels and tags
are attached with one query each per CHUNK contents, never a query per image.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone

from labelsd.records import ImageRecord, Prediction

log = logging.getLogger(__name__)

Run = Callable[[str, dict], list]

# The most values in one `IN (...)` list: SQLite before 3.32 allowed 999 bound
# variables per statement; 500 stays below it with room to spare.
CHUNK = 500

# A path's status, derived (never stored twice): missing wins; a queue row means
# the path is waiting (or failed before its content could be read); otherwise the
# status of its content. The error likewise.
STATUS_SQL = """CASE WHEN p.missing THEN 'missing'
            WHEN q.state = 'failed' THEN 'failed'
            WHEN q.id IS NOT NULL THEN 'pending'
            WHEN c.status IS NULL THEN 'pending'
            ELSE c.status END"""
ERROR_SQL = """CASE WHEN q.state = 'failed' THEN q.last_error
            WHEN q.id IS NOT NULL THEN NULL
            ELSE c.error END"""
# What a record is read from, for a query whose paths are `p`, their queue rows `q`
# (LEFT JOINed) and contents `c` (LEFT JOINed): the first RECORD_WIDTH columns of a
# row that `assemble` takes.
RECORD_COLUMNS = (f"p.path, p.sha256, {STATUS_SQL} AS status, {ERROR_SQL} AS error, "
                  "c.width, c.height, c.classified_at, c.taken_at, c.camera, c.gps_lat, "
                  "c.gps_lon, c.model")
RECORD_WIDTH = 12
FROM_PATHS = """FROM paths p
LEFT JOIN contents c ON c.sha256 = p.sha256
LEFT JOIN queue q ON q.path = p.path"""
RECORD_SELECT = f"SELECT {RECORD_COLUMNS} {FROM_PATHS}"


def in_list(name: str, values: Sequence, params: dict) -> str:
    """`:name0, :name1, ...` for an IN (...) list, its values added to `params`."""
    for i, value in enumerate(values):
        params[f"{name}{i}"] = value
    return ", ".join(f":{name}{i}" for i in range(len(values))) or "NULL"


def as_utc(value) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back text, naive)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None
            else value.astimezone(timezone.utc))


def assemble(run: Run, rows: Iterable[Sequence]) -> list[ImageRecord]:
    """Records from rows whose first RECORD_WIDTH columns are RECORD_COLUMNS (more
    columns may follow), in their order, with their labels and tags attached."""
    times: dict = {}  # a batch of results shares one time: parse each once

    def when(value) -> datetime | None:
        if value not in times:
            times[value] = as_utc(value)
        return times[value]

    records = [ImageRecord(path=r[0], sha256=r[1], status=r[2], error=r[3], width=r[4],
                           height=r[5], classified_at=when(r[6]), taken_at=r[7], camera=r[8],
                           gps_lat=r[9], gps_lon=r[10], model=r[11]) for r in rows]
    shas = sorted({r.sha256 for r in records if r.sha256})
    labels: dict[str, list[Prediction]] = {}
    tags: dict[str, list[str]] = {}
    for start in range(0, len(shas), CHUNK):
        params: dict = {}
        part = in_list("s", shas[start:start + CHUNK], params)
        for row in run("SELECT sha256, rank, label, wnid, class_index, score FROM predictions "
                       f"WHERE sha256 IN ({part}) ORDER BY sha256, rank", params):
            labels.setdefault(row[0], []).append(Prediction(*row[1:]))
        for sha, tag in run(f"SELECT sha256, tag FROM tags WHERE sha256 IN ({part}) "
                            "ORDER BY sha256, tag_key", params):
            tags.setdefault(sha, []).append(tag)
    for rec in records:
        if rec.sha256:
            # A pending path's stored labels describe older bytes (or another model's).
            rec.labels = labels.get(rec.sha256, []) if rec.status != "pending" else []
            rec.tags = tags.get(rec.sha256, [])
    return records


def records_page(run: Run, after: str, chunk: int, status: str | None = None) -> list[ImageRecord]:
    """Up to `chunk` records (of one status, if given) whose path sorts after
    `after`, ordered by path: one page of a walk over the library."""
    params: dict = {"last": after, "chunk": chunk}
    sql = RECORD_SELECT + " WHERE p.path > :last"
    if status:
        sql += f" AND ({STATUS_SQL}) = :status"
        params["status"] = status
    return assemble(run, run(sql + " ORDER BY p.path LIMIT :chunk", params))


def records_for_paths(run: Run, paths: Iterable[str]) -> list[ImageRecord]:
    """Records of the given stored paths, in the given order (unknown ones left out)."""
    wanted = list(paths)
    by_path: dict[str, ImageRecord] = {}
    for start in range(0, len(wanted), CHUNK):
        params: dict = {}
        sql = RECORD_SELECT + f" WHERE p.path IN ({in_list('p', wanted[start:start + CHUNK], params)})"
        for rec in assemble(run, run(sql, params)):
            by_path[rec.path] = rec
    return [by_path[p] for p in wanted if p in by_path]


class RecordReads(ABC):
    """The record reads of whatever can open one read transaction as a `run`
    (`rows()`): the Store and the query commands' Reader inherit them."""

    @abstractmethod
    def rows(self) -> AbstractContextManager[Run]:
        """One read transaction (a consistent snapshot), yielding `run`."""

    def record(self, path: str) -> ImageRecord | None:
        """The record of one path, or None when it is not tracked."""
        from labelsd.paths import canonical_path

        found = self.records_for_paths([canonical_path(path)])
        return found[0] if found else None

    def records(self, status: str | None = None, chunk: int = 1000) -> Iterator[ImageRecord]:
        """Every record (optionally of one status), ordered by path, one read
        transaction per `chunk`, so a large library never sits in memory at once."""
        last = ""
        while True:
            with self.rows() as run:
                batch = records_page(run, last, chunk, status)
            yield from batch
            if len(batch) < chunk:
                return
            last = batch[-1].path

    def records_for_paths(self, paths: Iterable[str]) -> list[ImageRecord]:
        """Records of the given stored paths, in the given order."""
        with self.rows() as run:
            return records_for_paths(run, paths)


def full_counts(run: Run) -> dict[str, int]:
    """Tracked paths in each status (all four keys present), counting every path:
    the reference the counters (store/counters.py) are held to."""
    totals = dict.fromkeys(("pending", "done", "failed", "missing"), 0)
    for status, count in run(f"SELECT {STATUS_SQL} AS status, count(*) {FROM_PATHS} GROUP BY 1",
                             {}):
        totals[status] = count
    return totals


__all__ = ["CHUNK", "ERROR_SQL", "FROM_PATHS", "RECORD_COLUMNS", "RECORD_SELECT", "RECORD_WIDTH",
           "STATUS_SQL", "RecordReads", "Run", "as_utc", "assemble", "full_counts", "in_list", "records_for_paths",
           "records_page"]
