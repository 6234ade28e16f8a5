"""`make run`: start labelsd in the foreground and, once it is ready (the model
loaded, the folders watched), print the one line that queries it from another
terminal.

    python scripts/make_run.py [--db DB] -- LABELSD_ARGV...

"Ready" is what systemd would be told: labelsd speaks the notify protocol, so
this stands in for systemd's notify socket (an abstract datagram socket) and
waits for READY=1. Ctrl-C reaches labelsd directly (same process group), which
drains and exits; this wrapper then exits with labelsd's status. Standard
library only: it runs before anything else is importable.
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


def query_line(labels: Path, db: str | None) -> str:
    """The command a person types in another terminal: `labels` when the one on
    PATH is there, else the full path of this venv's."""
    on_path = shutil.which("labels")
    command = "labels" if on_path else str(labels)
    if db:
        command += " --db " + shlex.quote(db if "://" in db else os.path.abspath(db))
    return command + " search cat"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="the database labelsd was given, if any")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("give the labelsd command after --")

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
            labels = Path(os.path.abspath(command[0])).with_name("labels")
            print(f"labelsd is ready. Query it from another terminal:  {query_line(labels, args.db)}",
                  flush=True)
    listener.close()
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
