"""The pipeline's claim stage: take queued paths for this node, never more than
`max_in_flight` at once, and keep the book of the claims held until their batch
is written.

It is the one owner of this node's claims, so it is also the one that renews
them (every RENEW_EVERY_S, a third of the lease: a working node's claims are never
taken over, a dead node's come back after the lease). The service's heartbeat
used to renew them as well; it no longer does, on purpose: a node whose claim
loop is stuck for longer than the lease (a hung network read) should lose its
work to the others, and if it wakes up and writes after all, the store makes that
late write harmless (a content already `done` is kept; its queue row is gone).
It is also the one that sleeps
when the queue is empty: woken at once by `wake()` (this process queued work),
by a PostgreSQL NOTIFY (another node did; `store.wakeups`), or at worst after
`idle_wait_s` (the polling fallback).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from labelsd.backoff import Backoff
from labelsd.errors import LabelsError, StoreUnavailable
from labelsd.pipeline.backfill import Backfill
from labelsd.pipeline.reader import POLL_S, Reader
from labelsd.records import Claim, Outcome, OutcomeKind
from labelsd.store import contents, wakeups, workqueue
from labelsd.store.engine import Store

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0  # how long the claimer sleeps when the queue is empty (a wake-up cuts it short)
RENEW_EVERY_S = workqueue.CLAIM_LEASE.total_seconds() / 3


class Claimer:
    """Claims held by this node (`held`, under `lock`; `changed` is notified when
    one is done) and the loop that takes more."""

    def __init__(self, store: Store, node_id: str, *, batch_size: int, max_in_flight: int,
                 reader: Reader, lock: threading.Lock, stop: threading.Event,
                 idle_wait_s: float = IDLE_WAIT_S, on_idle: Callable[[], None] | None = None,
                 reserved_by: str | None = None, backfill: Backfill | None = None):
        self.store = store
        self.node_id = node_id
        self.reserved_by = reserved_by  # a scan's: only the rows reserved for it (workqueue.reserve)
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.idle_wait_s = idle_wait_s
        self.max_in_flight_seen = 0  # high-water mark of claims held
        self.held: dict[int, Claim] = {}  # claimed and not yet written
        self.lock = lock
        self.changed = threading.Condition(lock)  # in-flight count went down
        self._reader = reader
        self._stop = stop
        self._wake = threading.Event()
        self._claiming = False
        self._generation = 0
        self._listener: wakeups.QueueListener | None = None
        self._on_idle = on_idle  # once per busy spell, when the last claim is written
        self.backfill = backfill  # asked for work only when the queue has none
        self._busy = False

    def wake(self) -> None:
        """New work was enqueued: claim now instead of at the next idle timeout."""
        self._wake.set()

    def listen(self) -> None:
        """Hear other nodes' work (PostgreSQL); nothing to do on SQLite."""
        self._listener = wakeups.start_listener(self.store, self.wake)

    def stop(self) -> None:
        self._wake.set()
        if self._listener is not None:
            self._listener.stop()
        with self.changed:
            self.changed.notify_all()

    def quiet(self) -> tuple[bool, int]:
        """(nothing held, no claim under way and no backfill left, a generation that
        moves on each claim)."""
        with self.lock:
            left = self.backfill is not None and not self.backfill.finished
            return (not self.held and not self._claiming and not left), self._generation

    def done(self, claims: Iterable[Claim]) -> None:
        """These claims were written: room for more."""
        with self.changed:
            for c in claims:
                self.held.pop(c.id, None)
            self.changed.notify_all()

    def take_all(self) -> list[int]:
        """Forget every held claim (at stop) and return the ids of those with a queue
        row, to hand back (a backfill's claims have none)."""
        with self.changed:
            ids = sorted(i for i in self.held if i > 0)
            self.held.clear()
            self.changed.notify_all()
        return ids

    def hand_back_all(self, stuck: list[Claim], waited_s: float) -> None:
        """At stop: every claim still held goes back to the queue. Those whose read or
        decode was still running when stop() gave up on it (`stuck`: its thread is
        left behind) go back as a failed attempt, so that a file whose read hangs
        every time ends failed instead of hanging every start."""
        held = set(self.take_all())
        stuck = [c for c in stuck if c.id in held]
        if stuck:
            log.warning("reading %s did not finish; handed back as a failed attempt",
                        ", ".join(os.path.basename(c.path) for c in stuck))
            error = f"reading it did not finish (labelsd stopped after waiting {waited_s:.0f} s)"
            try:
                contents.record_outcomes(self.store, self.node_id,
                                         [Outcome(c, OutcomeKind.RETRY, error=error) for c in stuck])
            except LabelsError as err:  # they come back after the claim lease
                log.warning("could not hand back %d claim(s): %s", len(stuck), err)
        self._release(sorted(held - {c.id for c in stuck}), "claimed image(s) to the queue")

    def run(self, beat: Callable[[], None]) -> None:
        last_renew = time.monotonic()
        backoff = Backoff()
        while not self._stop.is_set():
            beat()
            try:
                if time.monotonic() - last_renew > RENEW_EVERY_S:
                    workqueue.renew_claims(self.store, self.node_id)
                    last_renew = time.monotonic()
                with self.changed:
                    room = self.max_in_flight - len(self.held)
                    if room <= 0:
                        self.changed.wait(POLL_S)
                        continue
                    self._claiming = True
                self._wake.clear()
                try:
                    claims = workqueue.claim(self.store, self.node_id, min(room, self.batch_size),
                                             reserved_by=self.reserved_by)
                    if not claims and self.backfill is not None:  # new photos always go first
                        claims = self.backfill.take(min(room, self.batch_size))
                    with self.lock:
                        late = self._stop.is_set()  # stop() may have taken the held claims already
                        for c in [] if late else claims:
                            self.held[c.id] = c
                        self._reader.preparing += 0 if late else len(claims)
                        self._generation += 1
                        self.max_in_flight_seen = max(self.max_in_flight_seen, len(self.held))
                finally:
                    with self.lock:
                        self._claiming = False
                if late:  # claimed while the pipeline was stopping
                    self._release([c.id for c in claims], "image(s) claimed while stopping")
                    return
                backoff.reset()
                if not claims:
                    self._went_idle()
                    self._wake.wait(self.idle_wait_s)
                    continue
                self._busy = True
                self._reader.prepare(claims)
            except StoreUnavailable as err:
                log.warning("claiming work: %s; retrying in %.1fs", err, backoff.delay)
                backoff.wait(self._stop)
            except Exception:  # noqa: BLE001 - the pipeline must outlive any one surprise
                log.exception("claimer error; continuing")
                backoff.wait(self._stop)

    def _release(self, ids: list[int], what: str) -> None:
        """These claims straight back to the queue (a backfill's, with no queue row, left out)."""
        ids = [i for i in ids if i > 0]
        if not ids:
            return
        try:
            workqueue.release_claims(self.store, self.node_id, ids)
            log.info("handed back %d %s", len(ids), what)
        except StoreUnavailable as err:  # they come back after the claim lease
            log.warning("could not hand back %d claim(s): %s", len(ids), err)

    def _went_idle(self) -> None:
        """Nothing to claim and nothing held (every batch written) after some work."""
        with self.lock:
            idle = self._busy and not self.held
        if idle:
            self._busy = False
            if self._on_idle is not None:
                self._on_idle()


__all__ = ["IDLE_WAIT_S", "RENEW_EVERY_S", "Claimer"]
