"""The observers watchdog lends us: inotify with full events, and a polling
observer that paces itself on a big tree.

Polling a big tree costs. A polled root is snapshotted (every file stat()ed)
at most every POLL_INTERVAL_S, but never more often than POLL_PACE times as
long as its last snapshot took, so a share of 100,000 photos costs a tenth of
a core at most instead of all of it.
"""

from __future__ import annotations

import time
from functools import partial

from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingEmitter

POLL_INTERVAL_S = 1.0  # --poll, or past the inotify limit: how often each root is rescanned
POLL_PACE = 10.0  # ... but a snapshot that takes S seconds waits at least S * POLL_PACE


def inotify_observer():
    """watchdog's inotify observer with full events: a file moved in from outside
    arrives as a move with no source (complete at once), not as a bare creation
    that has to settle."""
    from watchdog.observers.inotify import InotifyObserver

    return InotifyObserver(generate_full_events=True)


class PacedPollingEmitter(PollingEmitter):
    """watchdog's polling emitter, waiting longer between snapshots of a big tree:
    at least POLL_PACE times as long as the last snapshot took."""

    pace = POLL_PACE
    snapshots = 0  # how many were taken (for tests)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._extra_wait = 0.0

    def queue_events(self, timeout: float) -> None:
        wait = timeout + self._extra_wait
        began = time.monotonic()
        super().queue_events(wait)  # waits `wait`, then snapshots and compares
        if self.stopped_event.is_set():
            return
        self.snapshots += 1
        snapshot_s = time.monotonic() - began - wait
        self._extra_wait = max(0.0, self.pace * snapshot_s - timeout)


def paced_polling_observer(timeout: float = POLL_INTERVAL_S, **emitter_kwargs) -> BaseObserver:
    """A polling observer whose emitters pace themselves (PacedPollingEmitter)."""
    emitter = partial(PacedPollingEmitter, **emitter_kwargs) if emitter_kwargs else PacedPollingEmitter
    return BaseObserver(emitter, timeout=timeout)


__all__ = ["POLL_INTERVAL_S", "POLL_PACE", "PacedPollingEmitter", "inotify_observer",
           "paced_polling_observer"]
