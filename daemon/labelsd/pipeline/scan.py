"""`labels scan DIR`: classify a folder now, in the foreground, with the same
pipeline the service runs.

It decides first what needs classifying (`plan_scan`: walk, queue what is new
or changed, mark what vanished, count what was labelled without a vector of the
model) and only then, if anything does, loads the model and runs the pipeline
(`scan_folder`): re-scanning an unchanged, embedded folder never pays for the model.
The pipeline embeds the folder's photos labelled before they had a vector (its
backfill, limited to the folder) after the new ones.

A scan owns what it scans. The queue is the library's, shared with any labelsd
service using it, and a service takes any queued row; so the scan reserves the
queued rows under its folder (`ScanReservation`: claimed for the scan and
renewed while it runs, the model's loading included) and its pipeline takes
only those: no service labels them meanwhile (with another model), the scan
never labels another folder's backlog, and its summary counts its own work. A
scan that ends early (the model would not load, Ctrl-C, an error) hands back
what it did not label: those rows stay queued, for the next scan of the folder,
or for a service using the library, and `left` says how many, for the command
to say so (after a kill, its reservation lapses after the claim lease)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

from sqlalchemy import func, select

from labelsd.errors import StoreUnavailable
from labelsd.events import Events
from labelsd.loopthread import LoopThread
from labelsd.paths import canonical_root
from labelsd.pipeline.backfill import Backfill
from labelsd.pipeline.claimer import RENEW_EVERY_S
from labelsd.pipeline.runner import Pipeline
from labelsd.pipeline.timeline import Timeline
from labelsd.records import FileFacts, OutcomeKind
from labelsd.store import contents, embeddings, relabel, workqueue
from labelsd.store.engine import Store
from labelsd.store.nodes import node_id_for_this_process
from labelsd.store.schema import QueueItem
from labelsd.watch.walk import walk_candidates

log = logging.getLogger(__name__)


@dataclass
class ScanResult:
    root: str
    found: int = 0  # candidate images under the root
    queued: int = 0  # new or changed, so (re)read
    unchanged: int = 0  # already in the store with the same size and mtime
    labeled: int = 0
    linked: int = 0
    failed: int = 0
    vanished: int = 0
    retrying: int = 0  # transient errors (e.g. permission denied): queued for later
    missing: int = 0  # tracked under the root before, gone now
    waiting: int = 0  # queued under the root earlier, not finished yet
    to_embed: int = 0  # labelled before, without a vector of the model (counted by plan_scan)
    embedded: int = 0  # of those, given their vector now
    seconds: float = 0.0

    @property
    def by_others(self) -> int:
        """Queued by this scan but not labelled by it: a labelsd service (or another
        scan) sharing the library held them before this scan reserved its rows."""
        return max(0, self.queued - self.labeled - self.linked - self.failed - self.vanished
                   - self.retrying)

    @property
    def needs_model(self) -> bool:
        return bool(self.queued or self.waiting or self.to_embed)

    def summary(self) -> str:
        """What became of every image found: the numbers add up to `found`."""
        parts = [f"{self.labeled} labeled", f"{self.linked} linked", f"{self.failed} failed",
                 f"{self.unchanged} unchanged"]
        if self.by_others:  # in flight elsewhere before the scan reserved its rows
            parts.append(f"{self.by_others} taken by another labelsd or scan sharing this library")
        if self.vanished:
            parts.append(f"{self.vanished} vanished")
        if self.missing:
            parts.append(f"{self.missing} missing")
        if self.retrying:
            parts.append(f"{self.retrying} to retry")
        if self.embedded:
            parts.append(f"{self.embedded} of the unchanged embedded for `labels similar`")
        return ", ".join(parts)


def walk_images(root: str) -> Iterator[FileFacts]:
    """Every candidate image under `root` (recursive), with its size and mtime.
    Symlinked folders are not followed; a symlinked file counts only when it
    points inside the root."""
    return walk_candidates(root, [root], linked_files=True)


def plan_scan(store: Store, root: str | os.PathLike, model: str | None = None) -> ScanResult:
    """Queue every new or changed image under `root` (and, given the `model` that
    will run, by name or family, what another model labelled there) and mark
    vanished ones missing; what is left to classify says whether the model is
    needed at all."""
    start = time.monotonic()
    root = canonical_root(os.fspath(root))
    result = ScanResult(root=root)
    facts = list(walk_images(root))
    result.found = len(facts)
    result.queued = workqueue.enqueue(store, facts)
    # what another model labelled is labelled again by this one (its queue rows keep
    # the old labels out of search meanwhile)
    if model is not None:
        result.queued += relabel.queue_other_models(store, model, under=root)
    result.unchanged = result.found - result.queued
    result.missing = contents.mark_missing_under(store, root, {f.path for f in facts})
    result.waiting = max(0, queued_under(store, root) - result.queued)
    if model is not None:
        result.to_embed = embeddings.count_to_embed_under(store, model.split("/", 1)[0], root)
    result.seconds = time.monotonic() - start
    return result


def queued_under(store: Store, root: str) -> int:
    """Rows waiting in the queue under the folder `root`."""
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(QueueItem).where(
            QueueItem.path.startswith(root.rstrip("/") + "/", autoescape=True),
            QueueItem.state == "queued")) or 0


class ScanReservation(LoopThread):
    """The queued rows under a scan's folder, reserved for the scan (see the module's
    doc): `reserve` on entering, renewed every RENEW_EVERY_S, handed back on leaving,
    whatever ended the scan; `left` is then how many rows stay queued under it."""

    def __init__(self, store: Store, root: str, owner: str | None = None):
        super().__init__("labels-scan-reservation")
        self.store = store
        self.root = canonical_root(root)
        self.owner = owner or f"{node_id_for_this_process()}:scan-reserved"
        self.left = 0

    def __enter__(self) -> ScanReservation:
        workqueue.reserve(self.store, self.owner, self.root)
        return self.start()

    def _run(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            try:
                workqueue.renew_claims(self.store, self.owner)
            except StoreUnavailable as err:  # the next turn tries again, within the lease
                log.warning("renewing the scan's claims: %s", err)

    def __exit__(self, *exc) -> None:
        self.stop()
        try:
            workqueue.release_claims(self.store, self.owner)
            self.left = queued_under(self.store, self.root)
        except StoreUnavailable as err:  # they come back after the claim lease
            log.warning("handing back the scan's claims: %s", err)


def scan_folder(store: Store, classifier, root: str | os.PathLike, *,
                batch_size: int | None = None, decode_workers: int = 0, max_wait_ms: int = 50,
                on_progress: Callable[[int, int], None] | None = None,
                timeout: float | None = None, timeline: Timeline | None = None,
                plan: ScanResult | None = None,
                reservation: ScanReservation | None = None) -> ScanResult:
    """Queue every new or changed image under `root` (unless `plan`, from
    `plan_scan`, did), mark vanished ones missing, and run the pipeline on the rows
    under it until none is left. batch_size None: the model's own.
    `on_progress(done, total)` is called after each batch; `timeline` (the
    benchmark's) records every stage. `reservation`: one the caller holds (taken
    before it loaded the model); else the scan reserves its rows itself."""
    start = time.monotonic()
    result = plan or plan_scan(store, root, classifier.name)
    with nullcontext(reservation) if reservation else ScanReservation(store, result.root) as reserved:
        _run_pipeline(store, classifier, result, reserved.owner, batch_size=batch_size,
                      decode_workers=decode_workers, max_wait_ms=max_wait_ms,
                      on_progress=on_progress, timeout=timeout, timeline=timeline)
    result.seconds += time.monotonic() - start
    return result


def _run_pipeline(store: Store, classifier, result: ScanResult, owner: str, *, batch_size, decode_workers,
                  max_wait_ms, on_progress, timeout, timeline) -> None:
    total = result.queued + result.waiting + result.to_embed  # the backfill's count on the bar too
    seen = 0

    def progress(outcomes) -> None:
        nonlocal seen
        seen += sum(o.kind != OutcomeKind.RETRY for o in outcomes)
        if on_progress is not None:
            on_progress(min(seen, total), total)

    if on_progress is not None:
        on_progress(0, total)
    events = Events()
    events.listen("batch_written", progress)
    pipeline = Pipeline(store, classifier, f"{node_id_for_this_process()}:scan",
                        batch_size=batch_size, decode_workers=decode_workers,
                        max_wait_ms=max_wait_ms, events=events, timeline=timeline,
                        links_within=[result.root],  # walk_images takes links into the root
                        reserved_by=owner,
                        backfill=Backfill(store, classifier.name, under=result.root)
                        if getattr(classifier, "embeds", True) else None)
    with pipeline:
        pipeline.wait_idle(timeout)
    result.labeled, result.linked = pipeline.done, pipeline.linked
    result.failed, result.vanished = pipeline.failed, pipeline.vanished
    result.retrying, result.embedded = pipeline.retried, pipeline.embedded
    if store.dialect == "sqlite" and (pipeline.done or pipeline.embedded):
        _keep_vector_file(store, classifier.name)


def _keep_vector_file(store: Store, model: str) -> None:
    """Bring the vector file beside the database up to date (as the service would)."""
    from labelsd.vectors.keeper import keep_file

    try:
        keep_file(store, model)
    except Exception:  # noqa: BLE001 - a cache: the next `labels similar` catches up itself
        log.debug("could not update the vector file", exc_info=True)


__all__ = ["ScanReservation", "ScanResult", "plan_scan", "queued_under", "scan_folder", "walk_images"]
