"""Run the real `labels serve` as a subprocess: start it, wait (with a deadline)
for the line that says it is ready, read its address, stop it with a signal.
Shared by the tests of `labels serve` and bench/web.py (pytest's `pythonpath`
puts bench/ on sys.path)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

LABELS = Path(sys.executable).with_name("labels")
READY_TIMEOUT_S = 30  # a loaded 2-core machine; the goal (bench/web.py) is under 1 s


class ServeProcess:
    """One `labels ... serve` process. `url` is its address once ready; `ready_s`
    how long it took from the start of the process to its ready line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 argv: list[str] | None = None, cwd: str | None = None):
        self.argv = argv or [str(LABELS), *args]  # argv: the whole command (as another user, say)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.ready_s: float | None = None
        self.ready_cpu_s: float | None = None  # the process's CPU seconds by then
        self.lines: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = READY_TIMEOUT_S) -> ServeProcess:
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=self.env, cwd=self.cwd)
        threading.Thread(target=self._read, args=(started,), daemon=True).start()
        if not self._ready.wait(timeout) or self.url is None:
            self.stop()
            raise AssertionError(f"labels serve was not ready in {timeout:.0f}s: " + "".join(self.lines))
        return self

    def _read(self, started: float) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            found = re.search(r"labels serve: (http://\S+)", line)
            if found and self.url is None:
                self.ready_s = time.perf_counter() - started
                self.ready_cpu_s = self.cpu_s()
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()  # ended before it was ready

    @property
    def base(self) -> str:
        """The address without a ?token=."""
        return self.url.split("?", 1)[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"labels serve did not end {timeout:.0f}s after signal {sig}") from None

    def cpu_s(self) -> float:
        """User and system CPU seconds the process used so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def serve_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with no developer config, data or cache in reach."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELS_")}
    env.update(XDG_CONFIG_HOME=str(home / "xdg-config"), XDG_DATA_HOME=str(home / "xdg-data"),
               XDG_CACHE_HOME=str(home / "xdg-cache"), HOME=str(home), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


__all__ = ["LABELS", "ServeProcess", "serve_env"]
