"""Wake-ups between nodes: an idle node hears at once that another node queued work.

On PostgreSQL every transaction that queues work sends one `NOTIFY labelsd_queue`
(`workqueue.notify_queued`, at most one per transaction: NOTIFY takes a lock at
commit). `QueueListener` holds one connection of its own, outside the pool, that
LISTENs on that channel, and calls `on_queued()` for each notification, so an
idle claimer starts within milliseconds instead of at its next poll. Polling
stays the fallback: a lost connection is logged, retried with back-off, and in
the meantime the claimer's idle timeout still finds the work. SQLite has no
other node to hear from: `start_listener` returns None there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from labelsd.loopthread import LoopThread
from labelsd.store.engine import Store
from labelsd.store.workqueue import QUEUE_CHANNEL

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often the listener looks at its stop event between notifications
MAX_BACKOFF_S = 5.0


class QueueListener(LoopThread):
    """LISTEN on the queue channel in a thread; stoppable, `stop()` safe twice."""

    def __init__(self, store: Store, on_queued: Callable[[], None]):
        self.store = store
        self.on_queued = on_queued
        self.heard = 0  # notifications received (tests, metrics)
        self._listening = threading.Event()
        super().__init__("labelsd-queue-listener")

    def wait_listening(self, timeout: float) -> bool:
        """True once LISTEN is in place (a notification sent after it is heard)."""
        return self._listening.wait(timeout)

    def _connect(self):
        # A connection of its own, detached from the pool: it stays open for the
        # node's life, so it must not count against the pool's bound.
        raw = self.store.engine.raw_connection()
        conn = raw.driver_connection
        raw.detach()
        conn.autocommit = True
        conn.execute(f"LISTEN {QUEUE_CHANNEL}")
        return conn

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                self._listening.set()
                backoff = 0.1
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=POLL_S):
                        self.heard += 1
                        self.on_queued()
            except Exception as err:  # noqa: BLE001 - polling covers for a lost listener
                self._listening.clear()
                log.warning("queue listener lost its connection (%s); retrying in %.1fs",
                            err, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        log.debug("closing the listener connection failed", exc_info=True)


def start_listener(store: Store, on_queued: Callable[[], None]) -> QueueListener | None:
    """A running listener on PostgreSQL; None on SQLite (one machine, woken in-process)."""
    if store.dialect != "postgresql":
        return None
    return QueueListener(store, on_queued).start()


__all__ = ["QueueListener", "start_listener"]
