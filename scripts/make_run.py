"""`make run`: choose the model, start labelsd in the foreground and, once it is ready
(the model loaded, the folders watched), print the one line that queries it from
another terminal.

    python scripts/make_run.py [--db DB] [--model NAME] [--weights FILE] -- LABELSD_ARGV...

The model: MODEL= (`--model`) when given, else what the config says. With no model
chosen anywhere (no MODEL=, no WEIGHTS=, no `model =` or `weights =` in the config,
no LABELS_WEIGHTS), the quick start runs InceptionV3 when its weights are in keras'
cache or can be downloaded now, and otherwise EfficientNet-Lite0, whose weights are
installed with labelsd, saying so in one line. This fallback lives here, not in
labelsd: a service whose model a person chose never switches models by itself (it
stops, naming both ways out).

"Ready" is what systemd would be told: labelsd speaks the notify protocol, so
this stands in for systemd's notify socket (an abstract datagram socket) and
waits for READY=1. Ctrl-C reaches labelsd directly (same process group), which
drains and exits; this wrapper then exits with labelsd's status. It runs with the
venv's Python, after `make` installed labelsd into it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

FALLBACK_MODEL = "efficientnet_lite0"


def labels_command(labels: Path) -> str:
    """`labels` when the one on PATH is there, else the full path of this venv's."""
    return "labels" if shutil.which("labels") else str(labels)


def query_line(labels: Path, db: str | None) -> str:
    """The command a person types in another terminal."""
    command = labels_command(labels)
    if db:
        command += " --db " + shlex.quote(db if "://" in db else os.path.abspath(db))
    return command + " search cat"


def choose_model(model: str | None, weights: str | None, labels: Path) -> tuple[str | None, str | None]:
    """(the --model to give labelsd, or None for its own choice; a line to print, or None)."""
    if model:
        return model, None  # MODEL=: that one, whatever happens
    from labelsd.config import configured, load_settings
    from labelsd.errors import LabelsError
    from labelsd.model import weights as inception_weights

    try:
        if weights or load_settings().weights or configured() & {"model", "weights"}:
            return None, None  # chosen in WEIGHTS=, LABELS_WEIGHTS or the config: labelsd's to say
    except LabelsError:
        return None, None  # a config labelsd will refuse, in its own words

    if not inception_weights.is_official(inception_weights.cached_weights_path()):
        print(f"make run: downloading InceptionV3's ImageNet weights (92 MB, once) into "
              f"{inception_weights.cached_weights_path().parent}...", flush=True)
    try:
        inception_weights.fetch_weights()
    except LabelsError as err:
        reason = inception_weights.one_line(err.__cause__ or err)
        return FALLBACK_MODEL, (
            f"make run: labelling with EfficientNet-Lite0 (installed with labelsd), not InceptionV3, "
            f"whose weights could not be downloaded ({reason}); for InceptionV3 later: "
            f"`{labels_command(labels)} model fetch` where there is internet (or WEIGHTS=FILE), then "
            f"`make run MODEL=inception_v3`: what Lite0 labelled is labelled again")
    return None, None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="the database labelsd was given, if any")
    parser.add_argument("--model", help="MODEL=: the model to run (no fallback)")
    parser.add_argument("--weights", help="WEIGHTS=: the weights labelsd was given, if any")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("give the labelsd command after --")
    labels = Path(os.path.abspath(command[0])).with_name("labels")
    try:
        model, said = choose_model(args.model, args.weights, labels)
    except KeyboardInterrupt:  # Ctrl-C during the download: nothing half-done is kept
        return 130
    if said:
        print(said, flush=True)
    if model:
        command += ["--model", model]

    address = f"@labelsd-make-run-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + address[1:])
    listener.settimeout(0.5)
    child = subprocess.Popen(command, env={**os.environ, "NOTIFY_SOCKET": address})
    # Ctrl-C goes to the whole foreground group: labelsd handles it; we wait for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    ready = False
    while child.poll() is None:
        try:
            message = listener.recv(4096).decode(errors="replace")
        except (TimeoutError, socket.timeout):
            continue
        except InterruptedError:
            continue
        if not ready and "READY=1" in message.splitlines():
            ready = True
            print(f"labelsd is ready. Query it from another terminal:  {query_line(labels, args.db)}",
                  flush=True)
    listener.close()
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
