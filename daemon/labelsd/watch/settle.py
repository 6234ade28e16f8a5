"""The settle tracker: files that appeared without a close event (a hard link,
a file copied in by another machine on a share, every file under --poll, a
recently modified file found by a reconcile scan) wait here until they are
complete.

A file is taken once its size and mtime stopped changing for `settle_s`. A
file that was opened after its creation has a local writer, whose close event
will come (the watcher then forgets it here and queues it); should that close
never come, the file is taken once stable for WRITER_IDLE_S.

Used by the watcher's intake thread only, so it holds no lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from labelsd.records import FileFacts
from labelsd.watch.walk import regular_file_facts

SETTLE_S = 1.0  # a file with no writer must keep its size and mtime this long
WRITER_IDLE_S = 60.0  # a file whose writer never closes it is taken once stable this long


@dataclass
class _Settling:
    size: int
    mtime_ns: int
    stable_since: float
    writer: bool = False


class SettleTracker:
    """Paths waiting for their size and mtime to settle. `poll`: no open or
    close events exist, so a modified file settles too, and a change never
    implies a local writer."""

    def __init__(self, settle_s: float = SETTLE_S, *, poll: bool = False):
        self.settle_s = settle_s
        self.poll = poll
        self._pending: dict[str, _Settling] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, path: str, *, created: bool) -> None:
        """A file was created (or, under --poll, modified): start or restart its wait."""
        facts = regular_file_facts(path)
        if facts is None:
            self._pending.pop(path, None)
            return
        pending = self._pending.get(path)
        now = time.monotonic()
        if pending is None:
            if not created and not self.poll:
                return  # inotify: a modified file's close will queue it
            self._pending[path] = _Settling(facts.size, facts.mtime_ns, now)
        elif (pending.size, pending.mtime_ns) != (facts.size, facts.mtime_ns):
            pending.size, pending.mtime_ns, pending.stable_since = facts.size, facts.mtime_ns, now
            pending.writer = pending.writer or not self.poll

    def writer_opened(self, path: str) -> None:
        """The file was opened after its creation: a local writer, whose close will come."""
        pending = self._pending.get(path)
        if pending is not None:
            pending.writer = True

    def forget(self, path: str) -> None:
        """The file was closed, moved or deleted: it no longer waits here."""
        self._pending.pop(path, None)

    def take_settled(self, now: float) -> list[FileFacts]:
        """Remove and return the files that have been stable long enough; drop
        the ones that are gone."""
        ready = []
        for path, pending in list(self._pending.items()):
            facts = regular_file_facts(path)
            if facts is None:
                del self._pending[path]
            elif (pending.size, pending.mtime_ns) != (facts.size, facts.mtime_ns):
                pending.size, pending.mtime_ns, pending.stable_since = (
                    facts.size, facts.mtime_ns, now)
            elif now - pending.stable_since >= (WRITER_IDLE_S if pending.writer else self.settle_s):
                del self._pending[path]
                ready.append(facts)
        return ready


__all__ = ["SETTLE_S", "WRITER_IDLE_S", "SettleTracker"]
