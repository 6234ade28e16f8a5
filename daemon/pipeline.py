"""The processing pipeline shared by the service and `labels scan`.

    claimer thread ──► decode pool ──► ready queue ──► batcher (model) ──► writer thread
    (queue.claim,       (read once,      (decoded or     (one top3 per      (one record_outcomes
     bounded)            sha256, decode)  final items)    batch)             per batch)

The claimer never holds more than `max_in_flight` claims (2 x batch_size + decode
workers), so memory stays bounded however many files are queued. Reading,
hashing, decoding and the database writes of one batch overlap with the forward
of the next, which is the only thing the model thread does. Content already
`done` in the store is linked without decoding; two paths with the same bytes
that are in flight together are decoded and classified once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue as queue_mod
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import func, or_, select

from . import queue
from .errors import ImageError, StoreUnavailable
from .images import decode_for_inception
from .queue import Claim, Outcome
from .records import Prediction
from .schema import QueueItem
from .store import Store

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0  # how long the claimer sleeps when the queue is empty (wake() cuts it short)
POLL_S = 0.25  # the timeout of every other blocking call: how fast threads notice stop()
RENEW_EVERY_S = queue.CLAIM_LEASE.total_seconds() / 3
MAX_BACKOFF_S = 5.0
RECENT_CONTENTS = 512  # classified contents remembered, so a copy in flight is not classified again

_SENTINEL = object()


@dataclass
class _Item:
    """One claimed path on its way through the pipeline."""

    claim: Claim
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    data: bytes | None = None
    pixels: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    final: Outcome | None = None  # set when no model call is needed
    followers: list[_Item] = field(default_factory=list)  # same bytes, other paths
    taken: bool = False  # the batcher has it; no more followers may join


@dataclass(frozen=True)
class _Known:
    predictions: list[Prediction]
    width: int | None
    height: int | None
    format: str | None


def _read(path: str) -> tuple[bytes, int, int, str]:
    """The file's bytes (read once), size, mtime_ns and SHA-256."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        data = fh.read()
    return data, st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest()


def _name(path: str) -> str:
    return os.path.basename(path)


class Pipeline:
    """Claim → decode → batch → classify → write, until stopped. A context manager."""

    def __init__(self, store: Store, classifier, node_id: str, *, batch_size: int = 8,
                 decode_workers: int = 0, max_wait_ms: int = 50,
                 on_batch: Callable[[list[Outcome]], None] | None = None,
                 idle_wait_s: float = IDLE_WAIT_S):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.store = store
        self.classifier = classifier
        self.node_id = node_id
        self.batch_size = batch_size
        self.decode_workers = decode_workers or len(os.sched_getaffinity(0))
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self.idle_wait_s = idle_wait_s
        self.max_in_flight = 2 * batch_size + self.decode_workers

        # counters (paths), read by the service's heartbeat and `labels scan`
        self.done = 0
        self.linked = 0
        self.failed = 0
        self.vanished = 0
        self.retried = 0
        self.model_rows = 0  # images that went through the model
        self.batches = 0
        self.max_in_flight_seen = 0  # high-water mark of claims held

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # in-flight count went down
        self._held: dict[int, Claim] = {}  # claimed and not yet written
        self._preparing = 0  # claimed, not yet on the ready queue (being read/decoded)
        self._claiming = False
        self._claim_generation = 0
        self._pending_by_sha: dict[str, _Item] = {}
        self._recent: OrderedDict[str, _Known] = OrderedDict()

        self._stop = threading.Event()
        self._abandon = threading.Event()  # stop() ran out of time: give up retries
        self._wake = threading.Event()
        self._batcher_done = threading.Event()
        self._ready: queue_mod.Queue = queue_mod.Queue()
        self._carry: deque[_Item] = deque()  # decoded, left for the next batch (batcher only)
        self._to_writer: queue_mod.Queue = queue_mod.Queue(maxsize=2)
        self._pool: ThreadPoolExecutor | None = None
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
        self._pool = ThreadPoolExecutor(self.decode_workers,
                                        thread_name_prefix="labelsd-pipeline-decode")
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
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        """Stop claiming, finish and commit the batch in the model, hand back every
        other claim, join the threads. Safe to call twice."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._ready.put(_SENTINEL)
        with self._changed:
            self._changed.notify_all()
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
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            unprocessed = sorted(self._held)
            self._held.clear()
            self._changed.notify_all()
        if unprocessed:
            try:
                queue.release_claims(self.store, self.node_id, unprocessed)
                log.info("handed back %d claimed image(s) to the queue", len(unprocessed))
            except StoreUnavailable as err:  # they come back after the claim lease
                log.warning("could not hand back %d claim(s): %s", len(unprocessed), err)

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._held)

    @property
    def last_progress(self) -> float:
        """time.monotonic() of the last healthy iteration of the slowest loop (for
        the systemd watchdog): a thread stuck on the database or the model stops it."""
        if not self._beats:
            return self._created
        return min(self._beats.values())

    def _beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()

    # ------------------------------------------------------------------ idleness

    def _claimable(self) -> int:
        now = datetime.now(timezone.utc)
        with self.store.read() as session:
            return session.scalar(select(func.count()).select_from(QueueItem).where(
                QueueItem.state == "queued",
                or_(QueueItem.not_before.is_(None), QueueItem.not_before <= now),
                or_(QueueItem.claimed_by.is_(None),
                    QueueItem.claimed_at < now - queue.CLAIM_LEASE)))

    def _quiet(self) -> tuple[bool, int]:
        with self._lock:
            return (not self._held and not self._claiming), self._claim_generation

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is claimable and nothing is in flight; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wake()
        while True:
            quiet, generation = self._quiet()
            if quiet:
                try:
                    claimable = self._claimable()
                except StoreUnavailable:
                    claimable = 1
                if not claimable and self._quiet() == (True, generation):
                    return True
                if claimable:
                    self.wake()
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._stopped:
                return False
            wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - time.monotonic()))
            with self._changed:
                self._changed.wait(wait)

    drain = wait_idle

    # ------------------------------------------------------------------ claimer

    def _claim_loop(self) -> None:
        last_renew = time.monotonic()
        backoff = 0.1
        while not self._stop.is_set():
            self._beat("claimer")
            try:
                if time.monotonic() - last_renew > RENEW_EVERY_S:
                    queue.renew_claims(self.store, self.node_id)
                    last_renew = time.monotonic()
                with self._changed:
                    room = self.max_in_flight - len(self._held)
                    if room <= 0:
                        self._changed.wait(POLL_S)
                        continue
                    self._claiming = True
                self._wake.clear()
                try:
                    claims = queue.claim(self.store, self.node_id, room)
                    with self._lock:
                        for c in claims:
                            self._held[c.id] = c
                        self._preparing += len(claims)
                        self._claim_generation += 1
                        self.max_in_flight_seen = max(self.max_in_flight_seen, len(self._held))
                finally:
                    with self._lock:
                        self._claiming = False
                backoff = 0.1
                if not claims:
                    self._wake.wait(self.idle_wait_s)
                    continue
                self._prepare(claims)
            except StoreUnavailable as err:
                log.warning("database busy while claiming (%s); retrying in %.1fs", err, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception:  # noqa: BLE001 - the pipeline must outlive any one surprise
                log.exception("claimer error; continuing")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _prepare(self, claims: list[Claim]) -> None:
        """Read and hash the claimed files in the pool, look their contents up in one
        query, then link, share or decode each."""
        items = [_Item(c) for c in claims]
        reads = [self._pool.submit(_read, c.path) for c in claims]
        pending = set(reads)
        while pending:
            _, pending = wait_futures(pending, timeout=POLL_S)
            if pending and self._stop.is_set():
                return  # these claims are handed back by stop()
        for item, fut in zip(items, reads):
            try:
                item.data, item.size, item.mtime_ns, item.sha256 = fut.result()
            except FileNotFoundError:
                item.final = Outcome(item.claim, "vanished")
            except NotADirectoryError:
                item.final = Outcome(item.claim, "vanished")
            except IsADirectoryError:
                item.final = Outcome(item.claim, "bad_image", error="is a folder, not an image")
            except OSError as err:  # permission denied, I/O error: maybe better later
                item.final = Outcome(item.claim, "retry",
                                     error=f"cannot read the file: {err.strerror or err}")
            except Exception as err:  # noqa: BLE001
                item.final = Outcome(item.claim, "retry", error=f"cannot read the file: {err}")

        status = self._content_status({i.sha256 for i in items if i.final is None})
        if status is None:
            return  # stopping while the database was locked: claims are handed back
        for item in items:
            if item.final is not None:
                self._to_ready(item)
            elif status.get(item.sha256) == "done":
                item.final = Outcome(item.claim, "linked", sha256=item.sha256,
                                     size=item.size, mtime_ns=item.mtime_ns)
                item.data = None
                self._to_ready(item)
            elif not self._share(item):
                self._pool.submit(self._decode, item)

    def _content_status(self, shas: set[str]) -> dict[str, str] | None:
        backoff = 0.1
        while True:
            try:
                return queue.content_status(self.store, shas)
            except StoreUnavailable as err:
                log.warning("database busy (%s); retrying in %.1fs", err, backoff)
                if self._stop.wait(backoff):
                    return None
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _share(self, item: _Item) -> bool:
        """Attach `item` to a path with the same bytes that is already on its way to
        the model, or answer it from a content classified moments ago."""
        with self._lock:
            known = self._recent.get(item.sha256)
            leader = self._pending_by_sha.get(item.sha256)
            if known is None and leader is not None and not leader.taken:
                item.data = None
                leader.followers.append(item)
                self._preparing -= 1
                return True
            if known is None:
                self._pending_by_sha[item.sha256] = item
                return False
        item.data = None
        item.final = self._classified(item, known)
        self._to_ready(item)
        return True

    def _decode(self, item: _Item) -> None:
        try:
            decoded = decode_for_inception(item.data)
            item.pixels, item.width, item.height, item.format = (
                decoded.pixels, decoded.width, decoded.height, decoded.format)
        except ImageError as err:
            item.final = Outcome(item.claim, "bad_image", sha256=item.sha256, size=item.size,
                                 mtime_ns=item.mtime_ns, error=str(err))
        except Exception as err:  # noqa: BLE001 - one file never kills the pipeline
            log.debug("decoding %s failed", item.claim.path, exc_info=True)
            item.final = Outcome(item.claim, "retry", error=f"cannot decode: {err}")
        finally:
            item.data = None
        if item.final is not None:
            with self._lock:
                if self._pending_by_sha.get(item.sha256) is item:
                    del self._pending_by_sha[item.sha256]
                item.taken = True  # no follower joins once this outcome is fixed
            for follower in item.followers:
                follower.final = Outcome(follower.claim, item.final.kind, sha256=item.sha256,
                                         size=follower.size, mtime_ns=follower.mtime_ns,
                                         error=item.final.error)
        self._to_ready(item)

    def _to_ready(self, item: _Item) -> None:
        with self._lock:
            self._preparing -= 1
        self._ready.put(item)

    # ------------------------------------------------------------------ batcher

    def _batch_loop(self) -> None:
        try:
            while True:
                self._beat("batcher")
                try:
                    first = self._carry.popleft() if self._carry else self._ready.get(timeout=POLL_S)
                except queue_mod.Empty:
                    if self._stop.is_set():
                        return
                    continue
                if first is _SENTINEL or self._stop.is_set():
                    return  # not started: stop() hands these claims back
                items = self._gather(first)
                if items is None:
                    return
                outcomes = self._classify(items)
                self._send(outcomes)
        finally:
            self._batcher_done.set()
            try:
                self._to_writer.put(_SENTINEL, timeout=POLL_S)
            except queue_mod.Full:
                pass  # the writer also ends once the batcher is done and its queue is empty

    def _gather(self, first: _Item) -> list[_Item] | None:
        """What is ready now, up to batch_size images for the model; wait up to
        max_wait_ms for more only while more are being read or decoded."""
        items = [first]
        wanted = 1 if first.final is None else 0
        deadline = time.monotonic() + self.max_wait_s
        while wanted < self.batch_size:
            try:
                item = self._carry.popleft() if self._carry else self._ready.get_nowait()
            except queue_mod.Empty:
                with self._lock:
                    busy = self._preparing > 0
                left = deadline - time.monotonic()
                if not busy or left <= 0:
                    break
                try:
                    item = self._ready.get(timeout=min(left, POLL_S))
                except queue_mod.Empty:
                    continue
            if item is _SENTINEL:
                return None
            items.append(item)
            wanted += item.final is None
        if self._stop.is_set():
            return None
        items = self._fit_ladder(items, wanted)
        with self._lock:
            for item in items:
                item.taken = True
                if item.sha256 and self._pending_by_sha.get(item.sha256) is item:
                    del self._pending_by_sha[item.sha256]
        return items

    def _fit_ladder(self, items: list[_Item], wanted: int) -> list[_Item]:
        """While more images are coming, run the largest padded size that is full
        (6 ready -> 4 now, 2 carried to the next batch) instead of padding 6 to 8:
        a padded row costs a full forward row and labels nothing."""
        with self._lock:
            more_coming = self._preparing > 0 or not self._ready.empty()
        ladder = getattr(self.classifier, "ladder", None)
        if not more_coming or not ladder or wanted in ladder:
            return items
        fits = max(size for size in ladder if size <= wanted)
        keep, carry, taken = [], [], 0
        for item in items:
            if item.final is None:
                if taken >= fits:
                    carry.append(item)
                    continue
                taken += 1
            keep.append(item)
        self._carry.extend(carry)
        return keep

    def _classify(self, items: list[_Item]) -> list[Outcome]:
        """One model call for the batch; the same bytes twice go through it once."""
        unique: dict[str, _Item] = {}
        for item in items:
            if item.final is None and item.sha256 not in unique:
                unique[item.sha256] = item
        known: dict[str, _Known] = {}
        if unique:
            leaders = list(unique.values())
            try:
                top3 = self.classifier.top3(np.stack([i.pixels for i in leaders]))
            except Exception as err:  # noqa: BLE001 - e.g. out of memory: try again later
                log.exception("model failed on a batch of %d", len(leaders))
                for item in items:
                    if item.final is None:
                        item.final = Outcome(item.claim, "retry", error=f"model failed: {err}")
                        for f in item.followers:
                            f.final = Outcome(f.claim, "retry", error=f"model failed: {err}")
                top3 = []
            self.model_rows += len(top3)
            for leader, preds in zip(leaders, top3):
                known[leader.sha256] = _Known(preds, leader.width, leader.height, leader.format)
            with self._lock:
                for sha, k in known.items():
                    self._recent[sha] = k
                while len(self._recent) > RECENT_CONTENTS:
                    self._recent.popitem(last=False)
        outcomes = []
        for item in items:
            for one in (item, *item.followers):
                if one.final is None:
                    one.final = self._classified(one, known[item.sha256])
                outcomes.append(one.final)
            item.pixels = None
        return outcomes

    def _classified(self, item: _Item, known: _Known) -> Outcome:
        return Outcome(item.claim, "classified", sha256=item.sha256, size=item.size,
                       mtime_ns=item.mtime_ns, width=known.width, height=known.height,
                       format=known.format, model=self.classifier.name,
                       predictions=list(known.predictions))

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
        while True:
            self._beat("writer")
            try:
                outcomes = self._to_writer.get(timeout=POLL_S)
            except queue_mod.Empty:
                if self._batcher_done.is_set():
                    return
                continue
            if outcomes is _SENTINEL:
                return
            if self._commit(outcomes):
                self._finish(outcomes)

    def _commit(self, outcomes: list[Outcome]) -> bool:
        """record_outcomes in one transaction; a locked database is retried with
        back-off (outcomes are never dropped while the pipeline runs)."""
        backoff = 0.1
        while True:
            try:
                queue.record_outcomes(self.store, self.node_id, outcomes)
                return True
            except StoreUnavailable as err:
                log.warning("database busy while writing %d outcome(s) (%s); retrying in %.1fs",
                            len(outcomes), err, backoff)
                if self._abandon.wait(backoff):
                    return False
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception:  # noqa: BLE001 - a bad row must not lose the whole batch
                log.exception("writing a batch failed; writing its outcomes one by one")
                self._commit_one_by_one(outcomes)
                return True

    def _commit_one_by_one(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            try:
                queue.record_outcomes(self.store, self.node_id, [o])
            except Exception as err:  # noqa: BLE001
                log.exception("cannot record %s", o.claim.path)
                try:
                    queue.record_outcomes(self.store, self.node_id, [
                        Outcome(o.claim, "retry", error=f"cannot store the result: {err}")])
                except Exception:  # noqa: BLE001 - left claimed; the lease brings it back
                    log.exception("cannot record a retry for %s", o.claim.path)

    def _finish(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            name = _name(o.claim.path)
            if o.kind == "classified":
                self.done += 1
                log.info("labeled %s: %s", name,
                         ", ".join(f"{p.label} {p.score:.2f}" for p in o.predictions))
            elif o.kind == "linked":
                self.linked += 1
                log.info("linked %s: same content as an image already labeled", name)
            elif o.kind == "bad_image":
                self.failed += 1
                log.info("failed %s: %s", name, o.error)
            elif o.kind == "vanished":
                self.vanished += 1
                log.info("vanished %s before it could be read", name)
            elif o.kind == "retry":
                if o.claim.attempts + 1 >= queue.MAX_ATTEMPTS:
                    self.failed += 1
                    log.info("failed %s: %s", name, o.error)
                else:
                    self.retried += 1
                    log.info("will retry %s: %s", name, o.error)
        self.batches += 1
        with self._changed:
            for o in outcomes:
                self._held.pop(o.claim.id, None)
            self._changed.notify_all()
        if self.on_batch is not None:
            try:
                self.on_batch(outcomes)
            except Exception:  # noqa: BLE001 - a progress bar must not stop the work
                log.exception("on_batch callback failed")


__all__ = ["Pipeline"]
