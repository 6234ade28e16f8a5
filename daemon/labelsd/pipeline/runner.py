"""The processing pipeline shared by the service and `labels scan`.

    claimer thread ──► decode pool ──► ready queue ──► batcher (model) ──► writer thread
    (workqueue.claim,       (read once,      (decoded or     (one top3 per      (one record_outcomes
     bounded)            sha256, decode)  final items)    batch)             per batch)

The claimer never holds more than `max_in_flight` claims (2 x batch_size + decode
workers), so memory stays bounded however many files are queued. Reading,
hashing, decoding and the database writes of one batch overlap with the forward
of the next, which is the only thing the model thread does. Content already
`done` in the store is linked without decoding; two paths with the same bytes
that are in flight together are decoded and classified once.

The claim stage lives in claimer.py (which also renews the claims and sleeps
until woken), the read stage in reader.py, the model call in batcher.py, the
write stage in writer.py; this module gathers batches from what is ready, runs
the threads and keeps the counters.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from labelsd.errors import StoreUnavailable
from labelsd.events import Events
from labelsd.model.classifier import Classifier
from labelsd.pipeline import memory
from labelsd.pipeline.backfill import Backfill
from labelsd.pipeline.batcher import BatchStage
from labelsd.pipeline.claimer import IDLE_WAIT_S, Claimer
from labelsd.pipeline.reader import POLL_S, Reader
from labelsd.pipeline.timeline import Timeline
from labelsd.pipeline.writer import commit_outcomes, log_outcome
from labelsd.records import Outcome, Tally
from labelsd.store import workqueue
from labelsd.store.engine import Store

log = logging.getLogger(__name__)

_SENTINEL = object()


class Pipeline:
    """Claim → decode → batch → classify → write, until stopped. A context manager.
    `reserved_by`: take only the rows reserved for that owner (a scan's, scan.py)."""

    def __init__(self, store: Store, classifier: Classifier, node_id: str, *, batch_size: int | None = None,
                 decode_workers: int = 0, max_wait_ms: int = 50,
                 events: Events | None = None,
                 idle_wait_s: float = IDLE_WAIT_S, timeline: Timeline | None = None,
                 links_within: Sequence[str] = (), reserved_by: str | None = None,
                 backfill: Backfill | None = None):
        if batch_size is None:  # the model's own (8 on CPU, 32 on GPU unless given)
            batch_size = classifier.batch_size
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.store = store
        self.classifier = classifier
        self.node_id = node_id
        self.batch_size = batch_size
        self.decode_workers = decode_workers or len(os.sched_getaffinity(0))
        self.max_wait_s = max_wait_ms / 1000
        self.events = events if events is not None else Events()
        self.idle_wait_s = idle_wait_s
        self.timeline = timeline  # spans of every stage, for the benchmark; None: not recorded
        self.max_in_flight = 2 * batch_size + self.decode_workers

        # counters (paths, one per records.Tally), read by the heartbeat and `labels scan`
        self.done = 0
        self.linked = 0
        self.failed = 0
        self.vanished = 0
        self.retried = 0
        self.embedded = 0  # the backfill's (pipeline/backfill.py)
        self.not_embedded = 0
        self.batches = 0

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._abandon = threading.Event()  # stop() ran out of time: give up retries
        self._batcher_done = threading.Event()
        self._ready: queue_mod.Queue = queue_mod.Queue()
        self._to_writer: queue_mod.Queue = queue_mod.Queue(maxsize=2)
        self._reader = Reader(store, self.decode_workers, lock=self._lock, ready=self._ready,
                              stop=self._stop, model_name=classifier.name,
                              decode=classifier.decode, timeline=timeline,
                              links_within=links_within, events=self.events)
        self._batches = BatchStage(classifier, self._reader, self._ready, lock=self._lock,
                                   stop=self._stop, batch_size=batch_size, max_wait_s=self.max_wait_s,
                                   sentinel=_SENTINEL, events=self.events, timeline=timeline)
        self._claims = Claimer(store, node_id, batch_size=batch_size,
                               max_in_flight=self.max_in_flight, reader=self._reader,
                               lock=self._lock, stop=self._stop, idle_wait_s=idle_wait_s,
                               on_idle=self._went_idle, reserved_by=reserved_by, backfill=backfill)
        self._threads: list[threading.Thread] = []
        self._beats: dict[str, float] = {}
        self._created = time.monotonic()
        self._started = False
        self._stopped = False
        self._stop_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Pipeline:
        if self._started:
            return self
        self._started = True
        self._reader.start()
        self._claims.listen()
        for name, target in (("claimer", self._claim_loop), ("batcher", self._batch_loop),
                             ("writer", self._write_loop)):
            self._beats[name] = time.monotonic()
            thread = threading.Thread(target=target, name=f"labelsd-pipeline-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wake(self) -> None:
        """New work was enqueued: claim now instead of at the next idle timeout."""
        self._claims.wake()

    def stop(self, timeout: float = 10) -> None:
        """Stop claiming, finish and commit the batch in the model, hand back every
        other claim, join the threads. Safe to call twice."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._claims.stop()
        self._ready.put(_SENTINEL)
        for thread in self._threads:
            left = deadline - time.monotonic()
            if thread.name.endswith("writer") and left < 1:
                self._abandon.set()  # a locked database must not hold shutdown forever
            thread.join(max(0.0, left))
            if thread.is_alive():
                self._abandon.set()
                thread.join(1.0)
                if thread.is_alive():
                    log.warning("%s did not stop within %.0fs", thread.name, timeout)
        stuck = self._reader.shutdown(max(0.0, deadline - time.monotonic()))
        self._claims.hand_back_all(stuck, timeout)

    @property
    def model_rows(self) -> int:
        """Images that went through the model."""
        return self._batches.model_rows

    @property
    def max_in_flight_seen(self) -> int:
        """High-water mark of claims held at once."""
        return self._claims.max_in_flight_seen

    @property
    def last_progress(self) -> float:
        """time.monotonic() of the last healthy iteration of the slowest loop (for
        the systemd watchdog): a thread stuck on the database or the model stops it."""
        if not self._beats:
            return self._created
        return min(self._beats.values())

    def _beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()

    def _taken(self, stage: str, get: Callable[..., object],
               upstream_done: Callable[[], bool]) -> Iterator:
        """What `get` hands `stage`, one at a time, until the sentinel, or until
        nothing comes within POLL_S and `upstream_done()`; a `_beat` each turn."""
        while True:
            self._beat(stage)
            try:
                taken = get(timeout=POLL_S)
            except queue_mod.Empty:
                if upstream_done():
                    return
                continue
            if taken is _SENTINEL:
                return
            yield taken

    # ------------------------------------------------------------------ idleness

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is claimable and nothing is in flight; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wake()
        while True:
            quiet, generation = self._claims.quiet()
            if quiet:
                try:
                    claimable = workqueue.has_claimable(self.store, self._claims.reserved_by)
                except StoreUnavailable:
                    claimable = True
                if not claimable and self._claims.quiet() == (True, generation):
                    return True
                if claimable:
                    self.wake()
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._stopped:
                return False
            wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - time.monotonic()))
            with self._claims.changed:
                self._claims.changed.wait(wait)

    def _went_idle(self) -> None:
        """The queue is empty and every batch written: give the decode buffers' memory back."""
        memory.release_free_memory()

    # ------------------------------------------------------------------ claimer

    def _claim_loop(self) -> None:
        self._claims.run(lambda: self._beat("claimer"))

    # ------------------------------------------------------------------ batcher

    def _batch_loop(self) -> None:
        try:
            for first in self._taken("batcher", self._batches.next_ready, self._stop.is_set):
                if self._stop.is_set():
                    return  # not started: stop() hands these claims back
                items = self._batches.gather(first)
                if items is None:
                    return
                self._send(self._batches.classify(items))
        finally:
            self._batcher_done.set()
            try:
                self._to_writer.put(_SENTINEL, timeout=POLL_S)
            except queue_mod.Full:
                pass  # the writer also ends once the batcher is done and its queue is empty

    def _send(self, outcomes: list[Outcome]) -> None:
        while True:
            try:
                self._to_writer.put(outcomes, timeout=POLL_S)
                return
            except queue_mod.Full:
                if self._abandon.is_set():
                    return

    # ------------------------------------------------------------------ writer

    def _write_loop(self) -> None:
        for outcomes in self._taken("writer", self._to_writer.get, self._batcher_done.is_set):
            start = time.monotonic()
            written = commit_outcomes(self.store, self.node_id, outcomes, self._abandon)
            if self.timeline is not None:
                self.timeline.add("write", start, len(outcomes))
            if written:  # all of them, unless stop() gave up waiting for the database
                self.events.emit("db_wrote", len(written), time.monotonic() - start)
                self._finish(written)

    def _finish(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            match log_outcome(o):
                case Tally.DONE:
                    self.done += 1
                case Tally.LINKED:
                    self.linked += 1
                case Tally.FAILED:
                    self.failed += 1
                case Tally.VANISHED:
                    self.vanished += 1
                case Tally.RETRIED:
                    self.retried += 1
                case Tally.EMBEDDED:
                    self.embedded += 1
                case Tally.NOT_EMBEDDED:
                    self.not_embedded += 1
                case other:
                    raise ValueError(f"no pipeline counter {other!r}")
        self.batches += 1
        self._claims.done(o.claim for o in outcomes)
        self.events.emit("batch_written", outcomes)


__all__ = ["Pipeline"]
