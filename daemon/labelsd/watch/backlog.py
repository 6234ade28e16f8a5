"""What the watcher saw while the database did not answer (locked for longer than
its busy timeout, a full disk, a lost connection).

The intake applies each window of file events in a few transactions. When one
fails, the window is not dropped: it is kept here, in order, and every later
window queues up behind it (so a creation is never applied after the deletion
that followed it), until the back-off says to try again. The first window that
goes through empties the backlog.

Memory is bounded: past `MAX_KEPT` events, the oldest are dropped and only the
roots they were under are remembered; once the database answers again, those
roots are rescanned (the reconcile scan finds every file that is new, changed
or gone), which is what a restart would have done.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable

from labelsd.backoff import Backoff
from labelsd.paths import shown

log = logging.getLogger(__name__)

MAX_KEPT = 50_000  # events kept in memory while the database does not answer


def _paths(event) -> Iterable[str]:
    for attr in ("src_path", "dest_path", "path"):
        value = getattr(event, attr, "")
        if value:
            yield value if isinstance(value, str) else value.decode(errors="replace")


class Backlog:
    """The intake's events not yet recorded. Used by the intake thread only.

    `roots_of(path)` names the watched roots a path is under; `rescan(root)`
    starts a reconcile scan of one root.
    """

    def __init__(self, roots_of: Callable[[str], list[str]], rescan: Callable[[str], None],
                 max_kept: int = MAX_KEPT, backoff: Backoff | None = None):
        self.roots_of = roots_of
        self.rescan = rescan
        self.max_kept = max_kept
        self.backoff = backoff or Backoff()
        self._kept: deque = deque()
        self._dropped_roots: set[str] = set()
        self.dropped = 0
        self._trying = False  # the kept events were handed out to be applied

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def waiting(self) -> bool:
        return bool(self._kept) or bool(self._dropped_roots)

    def due_in(self, idle_s: float) -> float:
        """How long the intake may wait for new events before trying again."""
        return min(idle_s, self.backoff.due_in()) if self.waiting else idle_s

    def pending(self, events: list, *, force: bool = False) -> list:
        """The events to apply now: the kept ones and then `events`; or none while
        the back-off has not run out (`events` are kept behind the others)."""
        if not self.waiting:
            return events
        self._kept.extend(events)
        self._trim()
        if not force and self.backoff.due_in() > 0:
            return []
        self._trying = True
        taken = list(self._kept)
        self._kept.clear()
        return taken

    def failed(self, events: list, err: Exception) -> None:
        """Applying `events` failed: keep them (in front of anything newer)."""
        first = self.backoff.failures == 0
        self._trying = False
        self._kept.extendleft(reversed(events))
        self._trim()
        wait = self.backoff.failed()
        if first:
            log.error("could not record file changes (%s); keeping them in memory and "
                      "retrying until the database answers", err)
        else:
            log.warning("still cannot record file changes (%d kept): %s; retrying in %.1fs",
                        len(self._kept), err, wait)

    def succeeded(self) -> None:
        """A window went through: the database answers. Rescan what was dropped."""
        if not self._trying and (self.waiting or not self.backoff.failures):
            return  # nothing was tried, or nothing failed
        self._trying = False
        if self.backoff.failures:
            log.warning("the database answers again; recorded the file changes kept "
                        "after %d failed tries", self.backoff.failures)
        self.backoff.reset()
        roots, self._dropped_roots = sorted(self._dropped_roots), set()
        for root in roots:
            log.warning("rescanning %s for the file changes not kept in memory", shown(root))
            self.rescan(root)

    def _trim(self) -> None:
        if len(self._kept) > self.max_kept and not self._dropped_roots:
            log.warning("more than %d file changes wait for the database; keeping the "
                        "folders of the oldest instead, to rescan them", self.max_kept)
        while len(self._kept) > self.max_kept:
            event = self._kept.popleft()
            self.dropped += 1
            for path in _paths(event):
                self._dropped_roots.update(self.roots_of(path))


__all__ = ["MAX_KEPT", "Backlog"]
