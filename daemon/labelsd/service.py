"""`labelsd`, the process: read the command line and the settings, set up
logging, install the signal handlers, run the `Service` (lifecycle.py: open the
store, load and warm the model, register this node, start the pipeline and the
watch), and exit with its status.

    SIGTERM / SIGINT   stop: intake first, then the pipeline finishes (or hands
                       back) the batch in flight, the node is marked stopped, exit 0.
                       Later signals are logged and ignored. A read that never
                       returns (a hung share) is left behind, its claim handed back
                       as a failed attempt. Whatever else hangs, SHUTDOWN_DEADLINE_S
                       after the stop began this node's claims are handed back and
                       the process exits 1.
    SIGHUP             reload the config file: watched folders added or removed
                       without a restart (a new folder is reconciled).

Under systemd (Type=notify) it reports READY=1 once the model is loaded and the
watch is up, STATUS= lines, WATCHDOG=1 while the pipeline makes progress, and
STOPPING=1. One error boundary: a LabelsError is one line on stderr and exit 1.
A database file deleted or replaced under the service (store/dbfile.py) is
logged at ERROR and ends it with exit 1, so that systemd starts it again.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from labelsd import __version__
from labelsd.config import (
    DEVICES,
    LOG_LEVELS,
    PRECISIONS,
    XMP_MODES,
    Settings,
    apply_keras_home,
    load_settings,
)
from labelsd.errors import LabelsError
from labelsd.journal import configure_logging
from labelsd.lifecycle import Service
from labelsd.model.registry import model_names
from labelsd.paths import one_line

log = logging.getLogger("labelsd")

# From the end of run() (a stop signal, a lost database, a failed start) to the
# process's exit, at most this long, whatever hangs: under systemd's
# TimeoutStopSec=30, which would otherwise kill it without handing anything back.
SHUTDOWN_DEADLINE_S = 20.0
HAND_BACK_WAIT_S = 3.0  # how long the deadline waits for the database to take the claims back

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
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="images per model call (default: 8 on a CPU, 32 on a GPU)")
    p.add_argument("--device", choices=DEVICES, help="where the model runs (default auto)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto (the fastest of fp32, int8 and bf16 on this CPU whose labels agree with "
                        "fp32's, measured once for the weights), fp32, bf16 or int8; default auto")
    p.add_argument("--model", choices=model_names(),
                   help="which model labels the images (default inception_v3; efficientnet_lite0 "
                        "is several times faster, and its weights are installed with labelsd)")
    p.add_argument("--poll", action="store_true", default=None,
                   help="poll the folders instead of inotify (NFS/SMB shares)")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower,
                   help="debug, info, warning or error (default info)")
    p.add_argument("--xmp", choices=XMP_MODES, help="sidecar: write NAME.EXT.xmp keywords beside "
                   "each labelled photo (default off)")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics there (e.g. 127.0.0.1:9464; default off)")
    p.add_argument("--version", action="version", version=f"labelsd {__version__}")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, **_flags(args))


def _flags(args: argparse.Namespace) -> dict:
    return {"db": args.db, "weights": args.weights, "watch": tuple(args.watch) or None,
            "batch_size": args.batch_size, "device": args.device, "poll": args.poll,
            "precision": args.precision,
            "log_level": args.log_level, "xmp": args.xmp, "model": args.model,
            "metrics": args.metrics}


# --------------------------------------------------------------------------- service


class _StopDuringStart(BaseException):
    """A stop signal arrived while the model was still loading: abandon the start.
    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""


class _ShutdownDeadline:
    """Armed once stopping begins; cancelled when it ends. Should it pass first
    (a read on a hung share, a database that never answers, any step of close()
    that hangs), this node's claims are handed back (if the database answers
    within HAND_BACK_WAIT_S; else the next start on this host, or the claim lease,
    takes them back) and the process exits 1."""

    def __init__(self, service: Service):
        self._service = service
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(SHUTDOWN_DEADLINE_S, self._passed)
            self._timer.name, self._timer.daemon = "labelsd-shutdown-deadline", True
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _passed(self) -> None:
        running = sorted(t.name for t in threading.enumerate()
                         if t.is_alive() and t not in (threading.current_thread(), threading.main_thread()))
        log.error("stopping did not finish within %.0f s (still running: %s); handing back this "
                  "node's claims and exiting", SHUTDOWN_DEADLINE_S, ", ".join(running) or "nothing")
        hand_back = threading.Thread(target=self._hand_back, name="labelsd-hand-back", daemon=True)
        hand_back.start()
        hand_back.join(HAND_BACK_WAIT_S)
        _exit_now(1)

    def _hand_back(self) -> None:
        from labelsd.store import workqueue

        service = self._service
        if service.store is None:
            return
        try:
            workqueue.release_claims(service.store, service.node_id)
            log.info("handed back this node's claims")
        except Exception as err:  # noqa: BLE001 - exiting anyway; the next start takes them back
            log.warning("could not hand back this node's claims (%s); the next start takes them back", err)


def _exit_now(rc: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


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
        print(f"labelsd: error: {one_line(err)}", file=sys.stderr)  # one journal entry
        return 1
    configure_logging(settings.log_level)
    apply_keras_home(settings)
    service = Service(settings, config=args.config, flags=_flags(args))
    _install_signal_handlers(service)
    rc = 0
    deadline = _ShutdownDeadline(service)
    try:
        with service:
            try:
                service.start()
                service.run()
            finally:
                deadline.arm()  # stopping, whatever the reason: it has a deadline
        if service.database_lost is not None:
            rc = 1  # so that systemd (Restart=on-failure) starts it again on the new file
    except _StopDuringStart as stop:
        log.info("stopped by %s while starting", stop)
    except LabelsError as err:
        log.debug("labelsd failed", exc_info=True)
        print(f"labelsd: error: {one_line(err)}", file=sys.stderr)  # one journal entry
        rc = 1
    deadline.cancel()
    if argv is None:
        # The real process (not a test calling main(argv)): everything is committed
        # and the store is closed. The interpreter's teardown saves nothing more: it
        # takes seconds with TensorFlow loaded, and it joins every thread of the
        # decode pool, for ever if one is stuck in a read the pipeline gave up on.
        # systemd and a waiting restart get the exit now.
        _exit_now(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
