"""The service object: what `labelsd` runs between its start and its exit.

`Service.start()` opens the store (and, for SQLite, takes the one-service lock
on its file), loads and warms the model, registers this node, starts the
pipeline, the watch and the heartbeat, then tells systemd READY=1. `run()` waits
for a stop and re-reads the config on a reload request. `close()` (a context
manager's exit) stops intake first, lets the pipeline finish or hand back the
batch in flight, marks the node stopped, and is safe to call twice.

The process around it (command line, logging, signals, exit status) is
service.py; the heartbeat thread is liveness.py.
"""

from __future__ import annotations

import logging
import threading
import time

from labelsd.config import Settings, load_settings
from labelsd.errors import ConfigError, LabelsError
from labelsd.events import Events
from labelsd.liveness import Heartbeat, take_over_dead_nodes
from labelsd.notify import Notifier, WatchdogPinger, start_timeout_extended
from labelsd.paths import canonical_root, shown, watched_roots
from labelsd.store import counters, nodes, relabel, workqueue
from labelsd.store.dbfile import DatabaseLost, ServedFile

# "labelsd", not __name__: "labelsd: ready:" is the line people and tests look for.
log = logging.getLogger("labelsd")

STOP_TIMEOUT_S = 8.0  # the pipeline's drain budget; systemd's TimeoutStopSec= is larger
PIPELINE_STALL_S = 60.0  # no loop iteration for this long = hung (stops the watchdog pings)


class Service:
    """The running service. A context manager: leaving it stops every part."""

    def __init__(self, settings: Settings, *, config: str | None = None,
                 flags: dict | None = None, notifier: Notifier | None = None):
        self.settings = settings
        self._config_arg = config
        self._flags = flags or {}
        self.notifier = notifier or Notifier()
        self.store = None
        self.classifier = None
        self.pipeline = None
        self.watcher = None
        self.sidecars = None
        self.metrics = None
        self.vectors = None  # the vector file's keeper (SQLite)
        self.node_id = nodes.node_id_for_this_process()
        self.started = False
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        self._reload = False
        self.served: ServedFile | None = None  # the SQLite file, held by this service only
        self.database_lost: DatabaseLost | None = None
        self._registered = False
        self._heartbeat: Heartbeat | None = None
        self._pinger: WatchdogPinger | None = None
        self._labeled_before = 0
        self._last_status = ""
        self._closed = False

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- signals (called from the handlers, in the main thread) -------------

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop.set()
        self._wakeup.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wakeup.set()

    # ---- start ---------------------------------------------------------------

    def start(self) -> None:
        from labelsd.metrics import check_metrics
        from labelsd.model import decode
        from labelsd.model.registry import get_model
        from labelsd.model.runtime import describe, load_model, registered_device
        from labelsd.pipeline.backfill import Backfill
        from labelsd.pipeline.memory import limit_arenas
        from labelsd.pipeline.runner import Pipeline
        from labelsd.store.engine import open_store
        from labelsd.store.walks import WalkLeases
        from labelsd.watch.watcher import Watcher
        from labelsd.xmp.writer import start_sidecar_writer

        s = self.settings
        # What can fail is checked before anything is created: a failed start leaves
        # no database and no lock behind (the weights may be downloaded here, once).
        roots = watched_roots(s.watch)
        get_model(s.model).check_weights(s.weights)
        if s.metrics:
            check_metrics(s.metrics)
        limit_arenas()  # before any thread of ours allocates: a smaller process at rest
        with start_timeout_extended(self.notifier):  # a migration, a first conversion
            self.notifier.status("opening the database")
            self.store = open_store(s.db)
            log.info("database %s", shown(self.store.where))
            self.served = ServedFile.of(self.store)
            if self.served is not None:
                self.served.claim()
            self.notifier.status("loading the model")
            self.classifier = load_model(s.weights, s.device, s.batch_size, s.precision,
                                         model=s.model)
        take_over_dead_nodes(self.store, self.node_id)
        self._registered = True  # from here on, a failed start marks the node stopped
        nodes.register(self.store, self.node_id, model=self.classifier.name,
                       device=registered_device(self.classifier), watching=roots)
        relabel.queue_other_models(self.store, self.classifier.name)  # after a --model switch
        self._labeled_before = counters.status_counts(self.store)["done"]
        decode.set_max_file_mb(s.max_file_mb)  # the size cap the reader applies
        events = Events()
        self.sidecars = start_sidecar_writer(self.store, s, events)  # None unless xmp = "sidecar"
        if s.metrics:  # a listener of the pipeline's events; prometheus_client only then
            from labelsd.metrics import start_metrics
            self.metrics = start_metrics(s.metrics, events, self.store)
        if self.served is not None:  # SQLite: the vector file beside it, kept current
            from labelsd.vectors.keeper import VectorKeeper
            self.vectors = VectorKeeper(self.store, self.classifier.name, events).start()
        self.pipeline = Pipeline(self.store, self.classifier, self.node_id,
                                 batch_size=s.batch_size, decode_workers=s.decode_workers,
                                 max_wait_ms=s.max_wait_ms, events=events,
                                 backfill=Backfill(self.store, self.classifier.name)
                                 if getattr(self.classifier, "embeds", True) else None).start()
        self.watcher = Watcher(self.store, roots, on_enqueued=self.pipeline.wake, poll=s.poll,
                               walk_leases=WalkLeases(self.store, self.node_id))
        self.watcher.start()
        self._heartbeat = Heartbeat(self.store, self.node_id, beat=self._beat,
                                    served=self.served, on_lost=self._database_lost).start()
        if self.notifier.watchdog_interval_s:
            self._pinger = WatchdogPinger(self.notifier, self.notifier.watchdog_interval_s,
                                          self._pipeline_healthy)
            self._pinger.start()
        self.started = True
        log.info("ready: watching %d folder(s) with %s on %s (node %s)", len(roots),
                 self.classifier.name, describe(self.classifier), self.node_id)
        self.notifier.ready(self._status_text())

    # ---- run -----------------------------------------------------------------

    def run(self) -> None:
        """Wait for a stop; reload on SIGHUP."""
        while not self._stop.is_set():
            self._wakeup.wait(timeout=10.0)
            self._wakeup.clear()
            if self._reload and not self._stop.is_set():
                self._reload = False
                self.reload()

    def reload(self) -> None:
        """Re-read the config file (flags still win): add and remove watched folders."""
        self.notifier.reloading()
        try:
            new = load_settings(self._config_arg, **self._flags)
            new_roots = [canonical_root(r) for r in new.watch]
            if not new_roots:
                raise ConfigError("the reloaded config watches no folder; keeping the current ones")
        except LabelsError as err:
            log.error("reload failed, settings unchanged: %s", err)
            self.notifier.ready(self._status_text())
            return
        old_roots = self.watcher.roots
        for root in old_roots:
            if root not in new_roots:
                self.watcher.remove_root(root)
        for root in new_roots:
            if root not in old_roots:
                try:
                    self.watcher.add_root(root)
                except LabelsError as err:
                    log.error("%s", err)
        from labelsd.model import decode  # loaded by start() already

        decode.set_max_file_mb(new.max_file_mb)
        if new.log_level != self.settings.log_level:
            logging.getLogger().setLevel(new.log_level.upper())
        needs_restart = [name for name in ("db", "weights", "model", "batch_size", "device", "precision", "poll",
                                           "decode_workers", "max_wait_ms", "xmp", "xmp_min_score",
                                           "metrics", "keras_home")
                         if getattr(new, name) != getattr(self.settings, name)]
        if needs_restart:
            log.warning("changed setting(s) %s take effect at the next restart",
                        ", ".join(needs_restart))
        self.settings = new
        log.info("reloaded the config: watching %s", ", ".join(map(shown, self.watcher.roots)))
        self._beat()
        self.notifier.ready(self._status_text())

    # ---- heartbeat, status, watchdog -------------------------------------------

    def _database_lost(self, err: DatabaseLost) -> None:
        """From the heartbeat: the database file is gone. Stop, and exit non-zero."""
        log.error("%s", err)
        self.database_lost = err
        self.request_stop("the database file was lost")

    def _beat(self) -> None:
        p = self.pipeline
        nodes.heartbeat(self.store, self.node_id, done=p.done, failed=p.failed,
                        watching=self.watcher.roots)
        status = self._status_text()
        if status != self._last_status:
            self._last_status = status
            self.notifier.status(status)

    def _status_text(self) -> str:
        roots = self.watcher.roots if self.watcher else []
        queued = workqueue.queue_depth(self.store) if self.store else 0
        labeled = self._labeled_before + (self.pipeline.done + self.pipeline.linked
                                          if self.pipeline else 0)
        folders = "folder" if len(roots) == 1 else "folders"
        gone = len(self.watcher.absent_roots) if self.watcher else 0
        if gone:
            folders += f" ({gone} gone, waiting for {'it' if gone == 1 else 'them'} to come back)"
        return f"watching {len(roots)} {folders}, {queued} queued, {labeled} labeled"

    def _pipeline_healthy(self) -> bool:
        limit = max(PIPELINE_STALL_S, 2 * (self.notifier.watchdog_interval_s or 0))
        return time.monotonic() - self.pipeline.last_progress < limit

    # ---- stop ----------------------------------------------------------------

    def close(self) -> None:
        """Stop intake, drain the pipeline, mark the node stopped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.notifier.stopping()
        if self.started:
            log.info("stopping (%s)", self.stop_reason or "shutdown")
        steps = [
            ("watcher", lambda: self.watcher and self.watcher.stop()),
            ("pipeline", lambda: self.pipeline and self.pipeline.stop(timeout=STOP_TIMEOUT_S)),
            ("sidecars", lambda: self.sidecars and self.sidecars.stop()),
            ("vector file", lambda: self.vectors and self.vectors.stop()),
            ("heartbeat", lambda: self._heartbeat and self._heartbeat.stop()),
            ("watchdog", lambda: self._pinger and self._pinger.stop()),
            ("metrics", lambda: self.metrics and self.metrics.stop()),
            # not into a lost file; a start that failed after registering says stopped too
            ("node", lambda: self._registered and not self.database_lost
             and nodes.mark_stopped(self.store, self.node_id)),
            ("store", lambda: self.store and self.store.close()),
            ("service lock", lambda: self.served and self.served.release()),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as err:  # noqa: BLE001 - every later step must still run
                log.error("stopping the %s: %s", name, err)
                log.debug("traceback", exc_info=True)
        self.notifier.close()
        if self.started:
            p = self.pipeline
            log.info("stopped: %d labeled, %d linked, %d failed this run",
                     p.done, p.linked, p.failed)


__all__ = ["PIPELINE_STALL_S", "STOP_TIMEOUT_S", "Service"]
