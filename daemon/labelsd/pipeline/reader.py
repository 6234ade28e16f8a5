"""The pipeline's read stage: read each claimed file once, hash it, look its content
up, then link it (content already `done`), share it (the same bytes are on their
way to the model, or were classified moments ago) or decode it, on a thread pool.

Every claim handed to `Reader.prepare` ends on the ready queue exactly once (as a
decoded item or an item with a final outcome), or rides along as a follower of an
item with the same bytes; only stop() interrupts that, and then the pipeline hands
the claims back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

from labelsd.backoff import Stopped, retry_unavailable
from labelsd.errors import ImageError
from labelsd.model.decode import DecodedImage, TruncatedImage
from labelsd.paths import shown
from labelsd.pipeline.items import (  # re-exported: the stages import them from here
    Item,
    Known,
    classified_outcome,
    not_embedded,
)
from labelsd.pipeline.reading import failed_outright, read_failure, read_file
from labelsd.records import Claim, Outcome, OutcomeKind
from labelsd.store import contents
from labelsd.store.engine import Store
from labelsd.xmp.metadata import read_photo_meta

log = logging.getLogger(__name__)

# Shared by every stage of the pipeline (pipeline.py, writer.py import them):
POLL_S = 0.25  # the timeout of every blocking call: how fast stop() is noticed
RECENT_CONTENTS = 512  # classified contents remembered, so a copy in flight is not classified again
RECENT_WRITE_NS = 3_000_000_000  # a truncated file modified this recently may still be written


def still_being_written(item: Item) -> bool:
    """A truncated file that changed since it was read, or was written moments
    ago, is a copy in progress (a slow copy, a sync client writing in bursts):
    it is read again later, never failed and logged as broken meanwhile."""
    try:
        st = os.lstat(item.claim.path)
    except OSError:
        return False
    changed = (st.st_size, st.st_mtime_ns) != (item.size, item.mtime_ns)
    return changed or time.time_ns() - st.st_mtime_ns < RECENT_WRITE_NS


class Reader:
    """Read, hash and decode claimed files on `workers` threads; put each on `ready`.

    `lock` is the pipeline's lock: it guards `preparing` (claimed, not yet on the
    ready queue), which the claimer raises and the batcher reads to decide whether
    waiting for more images is worth it.
    """

    def __init__(self, store: Store, workers: int, *, lock: threading.Lock, ready,
                 stop: threading.Event, model_name: str,
                 decode: Callable[[bytes], DecodedImage], timeline=None,
                 links_within: Sequence[str] = (), events=None):
        self.store = store
        self.workers = workers
        self.preparing = 0
        self._lock = lock
        self._ready = ready
        self._stop = stop
        self._model_name = model_name
        self._decode_bytes = decode  # the model's own (its input size and preprocessing)
        self._timeline = timeline
        self._links_within = tuple(links_within)  # `labels scan`: links into its folder
        self._events = events  # image_decoded(seconds), for the metrics
        self._pending_by_sha: dict[str, Item] = {}
        self._recent: OrderedDict[str, Known] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self._running: dict[Future, Claim] = {}  # reads and decodes in the pool, by their claim

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="labelsd-pipeline-decode")

    def shutdown(self, timeout: float) -> list[Claim]:
        """Stop the pool, waiting at most `timeout` for the reads and decodes in it.
        Returns the claims still being read or decoded then: a read that never
        returns (a hung network share) is left behind on its thread, never waited for."""
        if self._pool is None:
            return []
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._running)
        _, stuck = wait_futures(running, timeout=timeout)
        with self._lock:
            claims = {c.id: c for f in stuck if (c := self._running.get(f)) is not None}
        return list(claims.values())

    def _submit(self, fn, arg, claim: Claim) -> Future | None:
        """fn(arg) in the pool, kept in `_running` until done; None once the pool is
        shut down (stopping: stop() hands the claim back)."""
        try:
            future = self._pool.submit(fn, arg)
        except RuntimeError:
            return None
        with self._lock:
            self._running[future] = claim
        future.add_done_callback(self._forget)  # at once if it is done already
        return future

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._running.pop(future, None)

    def busy(self) -> bool:
        """Some claimed files are still being read or decoded."""
        with self._lock:
            return self.preparing > 0

    # ------------------------------------------------------------------ stage

    def prepare(self, claims: list[Claim]) -> None:
        """Read and hash the claimed files in the pool, look their contents up in one
        query, then link, share or decode each. Runs in the claimer thread."""
        items = [Item(c) for c in claims]
        reads = [self._submit(self._read, c.path, c) for c in claims]
        if None in reads:
            return  # stopping: these claims are handed back by stop()
        pending = set(reads)
        while pending:
            _, pending = wait_futures(pending, timeout=POLL_S)
            if pending and self._stop.is_set():
                return  # these claims are handed back by stop()
        for item, fut in zip(items, reads):
            try:
                item.data, item.size, item.mtime_ns, item.sha256 = fut.result()
            except Exception as err:  # noqa: BLE001 - every failure becomes an outcome
                item.final = read_failure(item.claim, err)

        status = self._content_status({i.sha256 for i in items
                                       if i.final is None and i.claim.embed_only is None})
        if status is None:
            return  # stopping while the database was locked: claims are handed back
        for item in items:
            if item.final is None and item.claim.embed_only is not None:  # a backfill's claim
                if item.sha256 == item.claim.embed_only:
                    self._submit(self._decode, item, item.claim)  # None: stopping
                    continue
                item.data = None
                item.final = Outcome(item.claim, OutcomeKind.NOT_EMBEDDED, sha256=item.sha256,
                                     error="the file holds other bytes now")
            if item.final is not None:
                self._to_ready(item)
            elif status.get(item.sha256) == "done":
                item.final = Outcome(item.claim, OutcomeKind.LINKED, sha256=item.sha256,
                                     size=item.size, mtime_ns=item.mtime_ns)
                item.data = None
                self._to_ready(item)
            elif not self._share(item):
                self._submit(self._decode, item, item.claim)  # None: stopping, handed back

    def _read(self, path: str):
        start = time.monotonic()
        try:
            return read_file(path, links_within=self._links_within)
        finally:
            if self._timeline is not None:
                self._timeline.add("read", start)

    def _content_status(self, shas: set[str]) -> dict[str, str] | None:
        try:
            return retry_unavailable(
                lambda: contents.content_status(self.store, shas, self._model_name),
                self._stop, "reading what is already labeled")
        except Stopped:
            return None

    def _share(self, item: Item) -> bool:
        """Attach `item` to a path with the same bytes that is already on its way to
        the model, or answer it from a content classified moments ago."""
        with self._lock:
            known = self._recent.get(item.sha256)
            leader = self._pending_by_sha.get(item.sha256)
            if known is None and leader is not None and not leader.taken:
                item.data = None
                leader.followers.append(item)
                self.preparing -= 1
                return True
            if known is None:
                self._pending_by_sha[item.sha256] = item
                return False
        item.data = None
        item.final = classified_outcome(item, known, self._model_name)
        self._to_ready(item)
        return True

    def _decode(self, item: Item) -> None:
        start = time.monotonic()
        try:
            decoded = self._decode_bytes(item.data)
            item.pixels, item.width, item.height, item.format = (
                decoded.pixels, decoded.width, decoded.height, decoded.format)
            if item.claim.embed_only is None:  # labelled before: its metadata is stored
                item.meta = read_photo_meta(item.data, item.claim.path)  # never raises
        except TruncatedImage as err:
            if still_being_written(item):  # the writer's close (or the settle rule) queues it again
                item.final = Outcome(item.claim, OutcomeKind.RETRY, error=f"still being written ({err})")
            else:
                item.final = Outcome(item.claim, OutcomeKind.BAD_IMAGE, sha256=item.sha256, size=item.size,
                                     mtime_ns=item.mtime_ns, error=str(err))
        except ImageError as err:
            item.final = Outcome(item.claim, OutcomeKind.BAD_IMAGE, sha256=item.sha256, size=item.size,
                                 mtime_ns=item.mtime_ns, error=str(err))
        except Exception as err:  # noqa: BLE001 - one file never kills the pipeline
            log.debug("decoding %s failed", shown(item.claim.path), exc_info=True)
            item.final = Outcome(item.claim, OutcomeKind.RETRY, error=f"cannot decode: {err}")
        finally:
            item.data = None
            if self._timeline is not None:
                self._timeline.add("decode", start)
            if self._events is not None:
                self._events.emit("image_decoded", time.monotonic() - start)
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

    def _to_ready(self, item: Item) -> None:
        if item.claim.embed_only is not None and item.final is not None \
                and item.final.kind != OutcomeKind.NOT_EMBEDDED:
            item.final = not_embedded(item)  # no queue row to retry or fail: the next pass tries again
        with self._lock:
            self.preparing -= 1
        self._ready.put(item)

    # ------------------------------------------------------------------ batcher's side

    def take(self, items: list[Item]) -> None:
        """The batcher has these: copies arriving from now on are not attached to them."""
        with self._lock:
            for item in items:
                item.taken = True
                if item.sha256 and self._pending_by_sha.get(item.sha256) is item:
                    del self._pending_by_sha[item.sha256]

    def remember(self, known: dict[str, Known]) -> None:
        """Contents just classified, so a copy claimed moments later skips the model."""
        with self._lock:
            for sha, k in known.items():
                self._recent[sha] = k
            while len(self._recent) > RECENT_CONTENTS:
                self._recent.popitem(last=False)


__all__ = ["Item", "Known", "Reader", "classified_outcome", "failed_outright", "not_embedded",
           "read_failure", "read_file"]
