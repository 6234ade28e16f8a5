"""Writing sidecars for what the store knows: for the service, a listener on
`batch_written` that hands paths to a thread of its own (the model and the
writer never wait for a sidecar); for the CLI, `refresh_sidecars` behind
`labels xmp write` and after `labels tag` / `labels untag` (and a tag changed in
`labels serve`: `refresh_after_tagging`).

A folder that cannot be written (the system unit's `ProtectSystem=strict`
makes photo folders read-only unless listed in `ReadWritePaths=`) is one
warning per folder, never a failure of the photo.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from labelsd.errors import SidecarError, SidecarFolderReadOnly
from labelsd.records import ImageRecord, Outcome, OutcomeKind
from labelsd.store.engine import Store
from labelsd.store.judgements import import_sidecar_rejections, labels_named
from labelsd.xmp.sidecar import sidecar_path, write_sidecar

log = logging.getLogger(__name__)

POLL_S = 0.25  # the timeout of every blocking call: how fast stop() is noticed
GATHER = 64  # paths whose records are loaded in one query
DRAIN_S = 2.0  # at stop, how long queued sidecars may still take (`labels xmp write` catches up)


def sidecar_labels(record: ImageRecord, min_score: float) -> list[str]:
    """The labels that go into the sidecar: top labels scoring at least `min_score`,
    and the ones the person confirmed whatever their score (a rejected label is not
    among a record's labels: it goes on the suppressed list instead)."""
    return [p.label for p in record.labels if p.score >= min_score or p.confirmed]


@dataclass
class SidecarReport:
    written: int = 0
    unchanged: int = 0
    skipped: int = 0  # not done (pending, failed), missing, or nothing to say
    errors: list[str] = field(default_factory=list)
    rejected: int = 0  # labels a sidecar said a person took away, stored as rejections


def refresh_sidecars(records: Iterable[ImageRecord], min_score: float,
                     lift: Iterable[str] = (), report: SidecarReport | None = None,
                     warned: set[str] | None = None, store: Store | None = None) -> SidecarReport:
    """Write or refresh the sidecar of every labelled record. Failed, pending and
    missing photos get none, nor does a photo with no label above `min_score` and
    no tag. A folder that cannot be written is reported once. A label a sidecar
    says a person took away (removed it in another program) is stored in `store`
    as a rejection (source "xmp"), as reading the photo would."""
    report = report or SidecarReport()
    taken: dict[str, list] = {}
    warned = set() if warned is None else warned
    lift = list(lift)
    for rec in records:
        if rec.status != "done" or not os.path.exists(rec.path):
            report.skipped += 1
            continue
        folder = os.path.dirname(rec.path)
        if folder in warned:
            report.skipped += 1
            continue
        labels = sidecar_labels(rec, min_score)
        if not labels and not rec.tags and not os.path.lexists(sidecar_path(rec.path)):
            report.skipped += 1  # nothing to say, and no sidecar to take labelsd's keywords out of
            continue
        try:
            done = write_sidecar(rec.path, labels, rec.tags, lift, [r.label for r in rec.rejected])
        except SidecarError as err:
            report.errors.append(str(err))
            if isinstance(err, SidecarFolderReadOnly):
                warned.add(folder)  # read-only: the rest of the folder would say the same
            continue
        if done:
            report.written += 1
        else:
            report.unchanged += 1
        if done.taken_away and rec.sha256:
            taken.setdefault(rec.sha256, []).extend(labels_named(done.taken_away, rec.labels))
    if taken and store is not None:
        report.rejected += import_sidecar_rejections(store, taken)
    return report


def refresh_after_tagging(store: Store, min_score: float, path: str | Iterable[str],
                          lift: Iterable[str] = ()) -> list[str]:
    """Rewrite photos' sidecars after their tags changed or a label was rejected or
    confirmed (`labels tag`/`untag`/`reject`/`confirm`, the same in `labels serve`);
    call it only with `xmp = "sidecar"`. Returns the warnings: a sidecar that cannot
    be written leaves the change itself done."""
    from labelsd.paths import canonical_path

    paths = [path] if isinstance(path, str) else list(path)
    records = store.records_for_paths(canonical_path(p) for p in paths)
    return refresh_sidecars(records, min_score, lift=lift, store=store).errors


class SidecarWriter:
    """The service's sidecar thread: `on_batch` (the `batch_written` listener) only
    queues paths; the thread loads their records and writes their sidecars."""

    def __init__(self, store: Store, min_score: float):
        self.store = store
        self.min_score = min_score
        self.written = 0
        self._queue: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._stop = threading.Event()
        self._deadline = 0.0  # set by stop(): queued sidecars are written until then
        self._warned: set[str] = set()
        self._thread: threading.Thread | None = None

    def start(self) -> SidecarWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="labelsd-sidecars", daemon=True)
            self._thread.start()
        return self

    def on_batch(self, outcomes: list[Outcome]) -> None:
        """Listener of `batch_written`: cheap, never blocks the pipeline's writer."""
        for o in outcomes:
            if o.kind in (OutcomeKind.CLASSIFIED, OutcomeKind.LINKED):
                self._queue.put(o.claim.path)

    def stop(self, timeout: float = DRAIN_S) -> None:
        """Write what is queued (for at most `timeout`), then end the thread. Idempotent."""
        if not self._stop.is_set():
            self._deadline = time.monotonic() + timeout
            self._stop.set()
            self._queue.put(None)  # wake the thread
        if self._thread is not None:
            self._thread.join(timeout + 2 * POLL_S)
            if self._thread.is_alive():
                log.warning("sidecar writing did not finish in time; `labels xmp write` catches up")

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=POLL_S)
            except queue_mod.Empty:
                if self._stop.is_set():
                    return  # stopped, and nothing left
                continue
            paths = [first]
            while len(paths) < GATHER:
                try:
                    paths.append(self._queue.get_nowait())
                except queue_mod.Empty:
                    break
            if self._stop.is_set() and time.monotonic() > self._deadline:
                return
            paths = list(dict.fromkeys(p for p in paths if p is not None))
            if paths:
                self._write(paths)

    def _write(self, paths: list[str]) -> None:
        try:
            records = self.store.records_for_paths(paths)
            report = refresh_sidecars(records, self.min_score, warned=self._warned,
                                      store=self.store)
        except Exception:  # noqa: BLE001 - a sidecar problem never stops the thread
            log.exception("writing sidecars failed")
            return
        self.written += report.written
        for message in report.errors:
            log.warning("%s", message)


__all__ = ["SidecarReport", "SidecarWriter", "refresh_after_tagging", "refresh_sidecars", "sidecar_labels",
           "start_sidecar_writer"]


def start_sidecar_writer(store: Store, settings, events) -> SidecarWriter | None:
    """With `xmp = "sidecar"`: a started SidecarWriter listening to `events`'
    batch_written. None (and nothing started) otherwise."""
    if settings.xmp != "sidecar":
        return None
    writer = SidecarWriter(store, settings.xmp_min_score).start()
    events.listen("batch_written", writer.on_batch)
    log.info("writing XMP sidecars (NAME.EXT.xmp) for labels scoring at least %.2f",
             settings.xmp_min_score)
    return writer
