"""Waiting out a database that does not answer (locked past its busy timeout, a
full disk, a lost connection): the one back-off every retry loop of the service
uses (the pipeline's claimer, reader and writer, the watcher's intake).

The wait doubles from `FIRST_S` up to `MOST_S` and starts again from the first
after a success; every wait ends early when the caller's stop event is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from labelsd.errors import StoreUnavailable

log = logging.getLogger(__name__)

FIRST_S = 0.1
MOST_S = 5.0  # the longest wait between two tries

T = TypeVar("T")


class Stopped(Exception):
    """The stop event was set while waiting to try again."""


class Backoff:
    """The delay before the next try: doubles after each failure, up to `most_s`."""

    def __init__(self, first_s: float = FIRST_S, most_s: float = MOST_S):
        self.first_s = first_s
        self.most_s = most_s
        self.delay = first_s
        self.failures = 0
        self._due = 0.0

    def reset(self) -> None:
        """A try succeeded: the next failure waits the shortest time again."""
        self.delay = self.first_s
        self.failures = 0
        self._due = 0.0

    def failed(self) -> float:
        """Count a failure; returns how long to wait before the next try."""
        wait = self.delay
        self.failures += 1
        self._due = time.monotonic() + wait
        self.delay = min(self.delay * 2, self.most_s)
        return wait

    def due_in(self) -> float:
        """Seconds until the next try is due (0 when it is)."""
        return max(0.0, self._due - time.monotonic())

    def wait(self, stop: threading.Event) -> bool:
        """Count a failure and wait it out; True if `stop` was set meanwhile."""
        return stop.wait(self.failed())


def retry_unavailable(op: Callable[[], T], stop: threading.Event, what: str) -> T:
    """`op()`, tried again with back-off while the store is unavailable. Raises
    Stopped when `stop` is set while waiting; any other error goes to the caller."""
    backoff = Backoff()
    while True:
        try:
            return op()
        except StoreUnavailable as err:
            log.warning("%s: %s; retrying in %.1fs", what, err, backoff.delay)
            if backoff.wait(stop):
                raise Stopped(what) from err


__all__ = ["MOST_S", "Backoff", "Stopped", "retry_unavailable"]
