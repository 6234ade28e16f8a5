"""The pipeline's model stage: gather what the read stage has ready into a batch
(`BatchStage`), cut it to a size the model runs without padding, and run one
model call over it (plain functions under the stage)."""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from collections import deque

import numpy as np

from labelsd.events import Events
from labelsd.pipeline.reader import POLL_S, Item, Known, Reader, classified_outcome
from labelsd.records import Outcome, OutcomeKind
from labelsd.vectors import codec

log = logging.getLogger(__name__)


def fit_ladder(items: list[Item], wanted: int,
               ladder: tuple[int, ...] | None) -> tuple[list[Item], list[Item]]:
    """(run now, carry to the next batch): the largest padded size that is full
    (6 ready -> 4 now, 2 carried) instead of padding 6 to 8, since a padded row costs
    a full forward row and labels nothing. Items with a final outcome always go now."""
    if not ladder or wanted in ladder:
        return items, []
    fits = max(size for size in ladder if size <= wanted)
    keep, carry, taken = [], [], 0
    for item in items:
        if item.final is None:
            if taken >= fits:
                carry.append(item)
                continue
            taken += 1
        keep.append(item)
    return keep, carry


def classify_batch(classifier, items: list[Item],
                   timeline=None) -> tuple[list[Outcome], dict[str, Known], int]:
    """One model call for the batch; the same bytes twice go through it once. It
    gives each content's top-3 and its vector (the pooled embedding, stored as
    vectors.codec makes it); a backfill's claim takes the vector only.
    Returns every outcome (followers included), what the model said per content,
    and how many rows went through the model."""
    unique: dict[str, Item] = {}
    for item in items:
        if item.final is None and item.sha256 not in unique:
            unique[item.sha256] = item
    known: dict[str, Known] = {}
    rows = 0
    if unique:
        leaders = list(unique.values())
        start = time.monotonic()
        try:
            top3, pooled = classifier.classify(np.stack([i.pixels for i in leaders]))
            codes = [codec.to_bytes(c) for c in codec.encode(pooled)] if pooled is not None else None
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: try again later
            log.exception("model failed on a batch of %d", len(leaders))
            for item in items:
                if item.final is None:
                    item.final = Outcome(item.claim, OutcomeKind.RETRY, error=f"model failed: {err}")
                    for f in item.followers:
                        f.final = Outcome(f.claim, OutcomeKind.RETRY, error=f"model failed: {err}")
            top3, codes = [], None
        if timeline is not None:
            timeline.add("forward", start, len(leaders))
        rows = len(top3)
        for n, (leader, preds) in enumerate(zip(leaders, top3)):
            known[leader.sha256] = Known(preds, leader.width, leader.height, leader.format,
                                         codes[n] if codes is not None else None)
    outcomes = []
    for item in items:
        for one in (item, *item.followers):
            if one.final is None:
                one.final = classified_outcome(one, known[item.sha256], classifier.name)
            outcomes.append(one.final)
        item.pixels = None
    return outcomes, known, rows


class BatchStage:
    """What the batcher thread does between the ready queue and the writer. Emits
    `model_ran(images, seconds)` after each forward."""

    def __init__(self, classifier, reader: Reader, ready: queue_mod.Queue, *,
                 lock: threading.Lock, stop: threading.Event, batch_size: int,
                 max_wait_s: float, sentinel: object, events: Events, timeline=None):
        self.classifier = classifier
        self.model_rows = 0  # images that went through the model
        self._reader = reader
        self._ready = ready
        self._lock = lock
        self._stop = stop
        self._batch_size = batch_size
        self._max_wait_s = max_wait_s
        self._sentinel = sentinel
        self._events = events
        self._timeline = timeline
        self._carry: deque[Item] = deque()  # decoded, left for the next batch

    def next_ready(self, timeout: float):
        """The first item of the next batch (raises queue.Empty on timeout)."""
        return self._carry.popleft() if self._carry else self._ready.get(timeout=timeout)

    def gather(self, first: Item) -> list[Item] | None:
        """What is ready now, up to batch_size images for the model; wait up to
        max_wait_ms for more only while more are being read or decoded. None: stop."""
        items = [first]
        wanted = 1 if first.final is None else 0
        deadline = time.monotonic() + self._max_wait_s
        while wanted < self._batch_size:
            try:
                item = self._carry.popleft() if self._carry else self._ready.get_nowait()
            except queue_mod.Empty:
                busy = self._reader.busy()
                left = deadline - time.monotonic()
                if not busy or left <= 0:
                    break
                try:
                    item = self._ready.get(timeout=min(left, POLL_S))
                except queue_mod.Empty:
                    continue
            if item is self._sentinel:
                return None
            items.append(item)
            wanted += item.final is None
        if self._stop.is_set():
            return None
        items = self._fit_ladder(items, wanted)
        self._reader.take(items)
        return items

    def _fit_ladder(self, items: list[Item], wanted: int) -> list[Item]:
        """While more images are coming, run a batch size that needs no padding."""
        with self._lock:
            more_coming = self._reader.preparing > 0 or not self._ready.empty()
        if not more_coming:
            return items
        keep, carry = fit_ladder(items, wanted, self.classifier.ladder)
        self._carry.extend(carry)
        return keep

    def classify(self, items: list[Item]) -> list[Outcome]:
        start = time.monotonic()
        outcomes, known, rows = classify_batch(self.classifier, items, self._timeline)
        if rows:
            seconds = time.monotonic() - start
            log.debug("model ran %d image(s) in %.0f ms", rows, 1000 * seconds)
            self._events.emit("model_ran", rows, seconds)
        self.model_rows += rows
        self._reader.remember(known)
        return outcomes


__all__ = ["BatchStage", "classify_batch", "fit_ladder"]
