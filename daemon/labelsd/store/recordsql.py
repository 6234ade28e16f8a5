"""Image records from the database: the SQL and the row-to-record assembly, once.

Two readers run it, each with its own connection: the service's `Store`
(SQLAlchemy; PostgreSQL, and the service on SQLite) and the query commands'
read-only `Reader` (serve/reader.py: the standard library's sqlite3, so that
`labels search` never pays for importing SQLAlchemy). Both hand it a
`run(sql, params) -> list of row tuples` over one read transaction. This module
imports no SQLAlchemy for that reason.

The SQL is plain text in the dialect both databases share, with `:name`
parameters (sqlite3 and SQLAlchemy's `text()` both take them). A record's path,
content and three labels come in one row of the statement that finds it (the
labels joined by rank); tags, and the judgements of the contents that have any
(store/judgedsql.py: rejected labels left out, confirmed ones marked), are
attached with one query per CHUNK contents, never a query per image.

Records are built once, as the dicts `--json` prints (`record_dicts`: no
dataclass and no function call per record, the hot path of `labels search` at a
million images); `assemble` turns them into `ImageRecord`s for everything else.
"""

from __future__ import annotations

import gc
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from labelsd.records import ImageRecord
from labelsd.store.judgedsql import apply_judgements, judgements_of

# The leaf helpers every plain-SQL module shares (re-exported: their old home).
from labelsd.store.sqlparts import CHUNK, Run, as_utc, in_list  # noqa: I001

log = logging.getLogger(__name__)

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
# The writer stores each content's top 3 labels (ranks 1, 2, 3): a record reads
# them joined by rank, so that each record is one row.
LABEL_RANKS = (1, 2, 3)
# What a record is read from, for a query whose paths are `p`, their queue rows `q`
# (LEFT JOINed) and what RECORD_JOINS adds (contents `c`, labels `l1`..`l3`): the
# first RECORD_WIDTH columns of a row that `record_dicts` and `assemble` take. The
# last two say whether the content has tags, and judgements (a label a person
# rejected or confirmed, store/judgements.py), at all: only those are looked up.
RECORD_COLUMNS = (f"p.path, p.sha256, {STATUS_SQL} AS status, {ERROR_SQL} AS error, "
                  "c.width, c.height, c.classified_at, c.taken_at, c.camera, c.gps_lat, "
                  "c.gps_lon, c.model, "
                  + ", ".join(f"l{k}.label, l{k}.wnid, l{k}.class_index, l{k}.score"
                              for k in LABEL_RANKS)
                  + ", EXISTS (SELECT 1 FROM tags tg WHERE tg.sha256 = p.sha256) AS tagged"
                  + ", EXISTS (SELECT 1 FROM judgements jd WHERE jd.sha256 = p.sha256) AS judged")
LABELS_AT = 12  # the first label column; each rank has 4 (label, wnid, class_index, score)
TAGGED_AT = LABELS_AT + 4 * len(LABEL_RANKS)
JUDGED_AT = TAGGED_AT + 1
RECORD_WIDTH = JUDGED_AT + 1
RECORD_JOINS = " LEFT JOIN contents c ON c.sha256 = p.sha256" + "".join(
    f" LEFT JOIN predictions l{k} ON l{k}.sha256 = p.sha256 AND l{k}.rank = {k}"
    for k in LABEL_RANKS)
# Paths with their contents and queue rows: what a status is computed from.
FROM_PATHS = """FROM paths p
LEFT JOIN contents c ON c.sha256 = p.sha256
LEFT JOIN queue q ON q.path = p.path"""
RECORD_SELECT = f"SELECT {RECORD_COLUMNS} FROM paths p LEFT JOIN queue q ON q.path = p.path{RECORD_JOINS}"


@contextmanager
def collector_paused() -> Iterator[None]:
    """Read and build many records with the cyclic garbage collector paused: rows
    and records hold no reference cycles, and its passes over a heap that grows by
    tens of thousands of tuples and dicts cost about as much as building them
    (`labels search cat` at a million images: 18,738 records, 0.04 s)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def record_dicts(run: Run, rows: Iterable[Sequence]) -> list[dict]:
    """Records, as the dicts `ImageRecord.to_dict` gives (the JSON shape), from rows
    whose first RECORD_WIDTH columns are RECORD_COLUMNS (more columns may follow),
    in their order, with their tags attached."""
    times: dict = {None: None}  # a batch of results shares one time: format each once
    label_at = [(rank, LABELS_AT + 4 * i) for i, rank in enumerate(LABEL_RANKS)]
    tagged_at = TAGGED_AT
    found: list[dict] = []
    by_sha: dict[str, list[list]] = {}  # tagged content -> the tag lists of its records
    judged: dict[str, list[dict]] = {}  # judged content -> its records
    for r in rows:
        when = r[6]
        stamp = times.get(when)
        if stamp is None and when is not None:
            stamp = times[when] = as_utc(when).isoformat()
        # a pending path's stored labels describe older bytes
        labels = [] if r[2] == "pending" else [
            {"rank": rank, "label": r[at], "wnid": r[at + 1], "class_index": r[at + 2],
             "score": r[at + 3], "confirmed": False} for rank, at in label_at if r[at] is not None]
        tags: list[str] = []
        if r[tagged_at]:
            by_sha.setdefault(r[1], []).append(tags)
        rec = {"path": r[0], "sha256": r[1], "status": r[2], "error": r[3],
               "width": r[4], "height": r[5], "labels": labels, "tags": tags,
               "classified_at": stamp, "taken_at": r[7], "camera": r[8],
               "gps": None if r[9] is None or r[10] is None else {"lat": r[9], "lon": r[10]},
               "model": r[11], "rejected": []}
        if r[JUDGED_AT] and r[2] != "pending":
            judged.setdefault(r[1], []).append(rec)
        found.append(rec)
    for sha, tags in tags_of(run, by_sha).items():
        for record_tags in by_sha[sha]:
            record_tags.extend(tags)
    for sha, judgements in judgements_of(run, judged).items():
        apply_judgements(judged[sha], judgements)
    return found


def tags_of(run: Run, shas: Iterable[str]) -> dict[str, list[str]]:
    """The tags of these contents (those with none left out), each list in tag
    order: one query per CHUNK contents."""
    wanted = sorted(shas)
    found: dict[str, list[str]] = {}
    for start in range(0, len(wanted), CHUNK):
        params: dict = {}
        part = in_list("s", wanted[start:start + CHUNK], params)
        for sha, tag in run(f"SELECT sha256, tag FROM tags WHERE sha256 IN ({part}) "
                            "ORDER BY sha256, tag_key", params):
            found.setdefault(sha, []).append(tag)
    return found


def assemble(run: Run, rows: Iterable[Sequence]) -> list[ImageRecord]:
    """`record_dicts` as `ImageRecord`s."""
    return [ImageRecord.from_dict(d) for d in record_dicts(run, rows)]


# The only paths that can be failed: a failed queue row's, or a failed content's (found
# through the partial index of contents not done). `labels list --status failed` and
# `labels serve`'s status page look there instead of at every path: at a million
# images with two failures, 4.4 s -> a few ms.
FAILED_CANDIDATES = ("SELECT fq.path FROM queue fq WHERE fq.state = 'failed' UNION "
                     "SELECT fp.path FROM contents fc JOIN paths fp ON fp.sha256 = fc.sha256 "
                     "WHERE fc.status <> 'done' AND fc.status = 'failed'")


def records_page(run: Run, after: str, chunk: int, status: str | None = None) -> list[dict]:
    """Up to `chunk` records (of one status, if given) whose path sorts after
    `after`, ordered by path, as `record_dicts`: one page of a walk over the library."""
    params: dict = {"last": after, "chunk": chunk}
    sql = RECORD_SELECT + " WHERE p.path > :last"
    if status:
        sql += f" AND ({STATUS_SQL}) = :status"
        params["status"] = status
    if status == "failed":
        sql += f" AND p.path IN ({FAILED_CANDIDATES})"
    return record_dicts(run, run(sql + " ORDER BY p.path LIMIT :chunk", params))


def rows_for_paths(run: Run, paths: Iterable[str]) -> list[Sequence]:
    """The record rows (RECORD_COLUMNS) of the given stored paths, in the given order
    (unknown ones left out): one query per CHUNK paths."""
    wanted = list(paths)
    by_path: dict[str, Sequence] = {}
    for start in range(0, len(wanted), CHUNK):
        params: dict = {}
        sql = RECORD_SELECT + f" WHERE p.path IN ({in_list('p', wanted[start:start + CHUNK], params)})"
        for row in run(sql, params):
            by_path[row[0]] = row
    return [by_path[p] for p in wanted if p in by_path]


def records_for_paths(run: Run, paths: Iterable[str]) -> list[ImageRecord]:
    """Records of the given stored paths, in the given order (unknown ones left out)."""
    return assemble(run, rows_for_paths(run, paths))


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
        return map(ImageRecord.from_dict, self.record_dicts(status, chunk))

    def record_dicts(self, status: str | None = None, chunk: int = 1000) -> Iterator[dict]:
        """`records`, as the dicts `ImageRecord.to_dict` gives (what `--json` prints)."""
        last = ""
        while True:
            with collector_paused(), self.rows() as run:
                batch = records_page(run, last, chunk, status)
            yield from batch
            if len(batch) < chunk:
                return
            last = batch[-1]["path"]

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


__all__ = ["CHUNK", "ERROR_SQL", "FAILED_CANDIDATES", "FROM_PATHS", "JUDGED_AT", "LABEL_RANKS", "RECORD_COLUMNS",
           "RECORD_JOINS", "RECORD_SELECT", "RECORD_WIDTH", "TAGGED_AT", "STATUS_SQL", "RecordReads", "Run", "as_utc",
           "assemble",
           "collector_paused", "full_counts", "in_list", "record_dicts", "records_for_paths",
           "records_page", "rows_for_paths", "tags_of"]
