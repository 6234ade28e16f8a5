"""The reconcile scan: bring the store in step with one watched root after
events may have been missed (at start, for a root added by a reload, after an
inotify queue overflow).

It walks the root (no symlinks followed), queues new or changed files (enqueue
skips unchanged ones by size and mtime without reading them) and marks tracked
files that are gone as missing. The watch is set up before the scan, so a file
that lands during the scan is seen by one or the other (or both, harmlessly).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from labelsd.records import FileFacts
from labelsd.store import contents
from labelsd.store.engine import Store
from labelsd.store.schema import QueueItem
from labelsd.watch.observers import POLL_PACE
from labelsd.watch.settle import SETTLE_S
from labelsd.watch.walk import walk_candidates
from labelsd.watch.watches import RESCAN_S

SCAN_CHUNK = 500  # files per enqueue transaction in a scan
RECENT_NS = int(2 * SETTLE_S * 1e9)  # a scanned file modified this recently may be half-written


class ExistingPaths(set):
    """The paths a scan saw, plus any path that exists right now: a file that
    appeared after the walk passed its folder must not be marked missing."""

    def __contains__(self, path: object) -> bool:
        return set.__contains__(self, path) or (isinstance(path, str) and os.path.lexists(path))


@dataclass
class ReconcileResult:
    seen: int = 0  # candidate files found under the root
    queued: int = 0
    missing: int = 0  # tracked files under the root that are gone
    finished: bool = False  # False when stopped before marking missing files


def reconcile_root(store: Store, root: str, roots: list[str], *,
                   enqueue: Callable[[list[FileFacts]], int],
                   settle_later: Callable[[str], None],
                   stop: threading.Event, unreadable: set[str] | None = None) -> ReconcileResult:
    """Queue new or changed files under `root` through `enqueue`, hand recently
    modified ones to `settle_later`, mark vanished ones missing; folders that
    cannot be listed are added to `unreadable`. Raises LabelsError on database
    trouble."""
    result = ReconcileResult()
    seen: set[str] = set()
    chunk: list[FileFacts] = []
    # Rows still queued from before (a crash, a stop) are read fresh when
    # claimed; re-stamping them would only send a claimed one round twice.
    waiting = queued_under(store, root)
    for facts in walk_candidates(root, roots, stop, unreadable=unreadable):
        seen.add(facts.path)
        if facts.path in waiting:
            continue
        if time.time_ns() - facts.mtime_ns < RECENT_NS:
            settle_later(facts.path)  # maybe still being written: the settle tracker decides
            continue
        chunk.append(facts)
        if len(chunk) >= SCAN_CHUNK:
            result.queued += enqueue(chunk)
            chunk = []
    result.queued += enqueue(chunk)
    result.seen = len(seen)
    if stop.is_set():
        return result
    result.missing = contents.mark_missing_under(store, root, ExistingPaths(seen))
    result.finished = True
    return result


class RescanPacer:
    """When each root that no observer can watch (watches.RESCANNED) is rescanned:
    every RESCAN_S, or POLL_PACE times as long as its last scan took."""

    def __init__(self):
        self._next: dict[str, float] = {}

    def due(self, roots: list[str], now: float) -> list[str]:
        """The roots whose rescan is due, each marked as running until `run` ends."""
        due = [r for r in roots if now >= self._next.get(r, 0.0)]
        for root in due:
            self._next[root] = float("inf")
        return due

    def run(self, root: str, scan: Callable[[str], None]) -> None:
        started = time.monotonic()
        try:
            scan(root)
        finally:
            took = time.monotonic() - started
            self._next[root] = time.monotonic() + max(RESCAN_S, POLL_PACE * took)


def queued_under(store: Store, root: str) -> set[str]:
    """Paths under `root` that wait in the queue, not yet claimed."""
    prefix = root.rstrip("/") + "/"
    with store.read() as session:
        return set(session.scalars(select(QueueItem.path).where(
            QueueItem.state == "queued", QueueItem.path.startswith(prefix, autoescape=True))))


__all__ = ["ExistingPaths", "ReconcileResult", "RescanPacer", "queued_under", "reconcile_root"]
