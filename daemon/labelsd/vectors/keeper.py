"""The service's thread that keeps a SQLite library's vector file current, so that
`labels similar` finds it in step (two small queries) instead of reading what the
service wrote since: at start (written from the database where it is missing or
stale), and after batches that wrote vectors, at most once every KEEP_EVERY_S.
It reads back what the writer committed: the database stays the one truth, and a
crash between the two costs the next reader a catch-up, never a wrong answer.

Not for PostgreSQL: nothing lives beside a server's database, and each reader
keeps its own copy in its user's cache (labelsd.vectors.library).
"""

from __future__ import annotations

import logging
import threading

from labelsd.backoff import Backoff
from labelsd.errors import StoreUnavailable
from labelsd.loopthread import LoopThread

log = logging.getLogger(__name__)

KEEP_EVERY_S = 10.0


class VectorKeeper(LoopThread):
    """Keeps the vector file of `model`'s space beside the SQLite `store`."""

    def __init__(self, store, model: str, events=None, every_s: float = KEEP_EVERY_S):
        super().__init__("labelsd-vector-keeper")
        self.store = store
        self.model = model
        self.every_s = every_s
        self.syncs = 0
        self._written = threading.Event()
        self._written.set()  # once at start
        if events is not None:
            events.listen("batch_written", self._batch_written)

    def _batch_written(self, outcomes) -> None:
        if any(o.embedding is not None for o in outcomes):
            self._written.set()

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            if not self._written.wait(1.0):
                continue
            self._written.clear()
            try:
                self.sync()
                backoff.reset()
            except StoreUnavailable as err:
                log.info("keeping the vector file: %s; trying again later", err)
                self._written.set()
                backoff.wait(self._stop)
                continue
            except Exception:  # noqa: BLE001 - a cache: the readers catch up without it
                log.exception("keeping the vector file failed; the readers catch up without it")
            self._stop.wait(self.every_s)  # coalesce: a burst's batches, one sync

    def sync(self) -> None:
        if keep_file(self.store, self.model):
            self.syncs += 1


def keep_file(store, model: str) -> bool:
    """Bring the vector file of `model`'s space beside the SQLite `store` up to date
    (the keeper's turn, and `labels scan`'s once at its end). False: no such space yet."""
    from labelsd.vectors import library

    with store.rows() as run:
        space = library.find_space(run, model=model)
        if space is None:
            return False
        library.load(run, space, library.location(store.where, "sqlite"))
    return True


__all__ = ["KEEP_EVERY_S", "VectorKeeper", "keep_file"]
