"""The shape of every long-lived loop of the service that owns one thread: a stop
event, `start()`, and a `stop()` that sets the event and joins the thread with a
timeout, safe to call twice and from the thread itself (STYLE.md, habit 5).

The heartbeat (liveness.py), the systemd watchdog pinger (notify.py) and the
PostgreSQL queue listener (store/wakeups.py) are loop threads. Components with
more than one thread (the pipeline, the watcher) or with a drain on stop (the
sidecar writer) keep their own start and stop.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T", bound="LoopThread")


class LoopThread(ABC):
    """Runs `_run` on one daemon thread named `name`. `_run` loops until
    `self._stop` is set, and waits on it (`self._stop.wait(s)`) instead of sleeping,
    so that `stop()` is noticed at once."""

    def __init__(self, name: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @abstractmethod
    def _run(self) -> None:
        """The loop; it returns once `self._stop` is set."""

    def start(self: _T) -> _T:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Set the stop event and wait up to `timeout` for the thread to end."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.0fs", self._thread.name, timeout)


__all__ = ["LoopThread"]
