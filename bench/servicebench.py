"""The real `labelsd` service, measured from outside: start to READY, bursts, single
drops, peak memory, idle CPU. Used by throughput.py; reuses servicekit.py to run
the service as a subprocess (the same way the service tests do)."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from servicekit import Service, service_env

POLL_S = 0.01  # how often the database is read while timing one drop


def _status_sql(n: int) -> str:
    marks = ",".join("?" * n)
    return f"""
        SELECT p.path FROM paths p JOIN contents c ON c.sha256 = p.sha256
        LEFT JOIN queue q ON q.path = p.path
        WHERE p.path IN ({marks}) AND q.id IS NULL AND c.status IN ('done', 'failed')"""


class BenchService:
    """One labelsd process on a fresh SQLite file, watching one fresh folder."""

    def __init__(self, workdir: Path, weights: Path, args: tuple[str, ...] = ("--device", "cpu")):
        self.workdir = workdir
        self.inbox = workdir / "inbox"
        self.staging = workdir / "staging"  # same file system: a move into inbox is a rename
        self.inbox.mkdir(parents=True)
        self.staging.mkdir()
        self.sock_path = workdir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        env = service_env(workdir, NOTIFY_SOCKET=str(self.sock_path))
        self.service = Service(workdir, db=workdir / "labels.db", weights=weights,
                               watch=[self.inbox], args=args, env=env)
        self._conn: sqlite3.Connection | None = None

    def start_until_ready(self, timeout: float = 300) -> float:
        """Seconds from process start to its READY=1 datagram."""
        start = time.perf_counter()
        self.service.start()
        deadline = start + timeout
        self.sock.settimeout(1.0)
        while time.perf_counter() < deadline:
            try:
                message = self.sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                if not self.service.alive():
                    sys.exit(f"labelsd exited before READY\n{self.service.tail()}")
                continue
            if "READY=1" in message.split("\n"):
                return time.perf_counter() - start
        sys.exit(f"labelsd not READY after {timeout:.0f}s\n{self.service.tail()}")

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.service.stop()
        self.sock.close()

    # ---- database ----------------------------------------------------------------

    def settled(self, paths: list[str]) -> int:
        """How many of `paths` are done or failed (checked in chunks of 500)."""
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{self.service.db}?mode=ro", uri=True, timeout=30)
        total = 0
        for i in range(0, len(paths), 500):
            chunk = paths[i:i + 500]
            total += len(self._conn.execute(_status_sql(len(chunk)), chunk).fetchall())
        return total

    def wait_settled(self, paths: list[str], timeout: float, interval: float) -> float:
        """perf_counter() when every path is done or failed."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.settled(paths) == len(paths):
                return time.perf_counter()
            if not self.service.alive():
                sys.exit(f"labelsd died\n{self.service.tail()}")
            if time.perf_counter() > deadline:
                sys.exit(f"{len(paths) - self.settled(paths)} of {len(paths)} images not done "
                         f"after {timeout:.0f}s\n{self.service.tail()}")
            time.sleep(interval)

    def failed(self) -> int:
        return self._conn.execute(
            "SELECT count(*) FROM contents WHERE status = 'failed'").fetchone()[0]

    # ---- measurements ----------------------------------------------------------------

    def burst(self, sources: list[Path], timeout: float = 900) -> float:
        """Stage `sources` beside the watched folder, then rename them all in; images/s
        from the first rename to the commit of the last label. Renamed in, the way sync
        tools deliver files (rsync, Syncthing and Nextcloud write a temporary name, then
        rename it): copied in, the copying would be this bench's own work on the two
        cores the service is measured on (130 MB for 32 photos), which no ceiling counts.
        The end is the service's own commit time (the latest `classified_at` of the
        burst), not when our poll saw it: a 0.1 s poll would add up to 0.1 s that is not
        the service's (14% of a 32-photo int8 burst), and a faster poll would take CPU
        from the service it measures."""
        targets = [str(self.inbox / s.name) for s in sources]
        for src in sources:
            shutil.copyfile(src, self.staging / src.name)
        start_wall, start = time.time(), time.perf_counter()
        for src in sources:
            os.rename(self.staging / src.name, self.inbox / src.name)
        seen = self.wait_settled(targets, timeout, interval=0.1)
        last = last_classified(self._conn, targets)
        elapsed = seen - start if last is None else min(seen - start, last - start_wall)
        return len(sources) / elapsed

    def single_drops(self, sources: list[Path], timeout: float = 120) -> list[float]:
        """Move each file into the idle service's folder on its own; seconds to done."""
        latencies = []
        for src in sources:
            staged = self.staging / src.name
            shutil.copyfile(src, staged)
            target = str(self.inbox / src.name)
            self.wait_idle()
            start = time.perf_counter()
            os.rename(staged, target)
            latencies.append(self.wait_settled([target], timeout, interval=POLL_S) - start)
        return latencies

    def wait_idle(self, quiet_s: float = 0.5, timeout: float = 30) -> None:
        """Until the service used (almost) no CPU for `quiet_s`: the batch before is written."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            before = self.cpu_seconds()
            time.sleep(quiet_s)
            if self.cpu_seconds() - before < 0.05 * quiet_s:
                return

    def cpu_seconds(self) -> float:
        return self.service.cpu_seconds()

    def idle_cpu_per_minute(self, seconds: float) -> float:
        self.wait_idle()
        before = self.cpu_seconds()
        time.sleep(seconds)  # the measurement window itself
        return (self.cpu_seconds() - before) * 60 / seconds

    def peak_rss_bytes(self) -> int:
        """VmHWM: the resident-set high-water mark over the process's life."""
        for line in Path(f"/proc/{self.service.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0


def last_classified(conn: sqlite3.Connection, paths: list[str]) -> float | None:
    """time.time() of the latest `classified_at` among `paths` (the commit of their last
    batch), or None when none was classified. The store keeps UTC; a value stored
    without its offset is UTC too, never local time."""
    latest = None
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        marks = ",".join("?" * len(chunk))
        value = conn.execute(f"SELECT max(c.classified_at) FROM paths p JOIN contents c ON c.sha256 = p.sha256 "
                             f"WHERE p.path IN ({marks})", chunk).fetchone()[0]
        if value is not None:
            at = datetime.fromisoformat(value)
            at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at
            latest = at.timestamp() if latest is None else max(latest, at.timestamp())
    return latest


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


__all__ = ["BenchService", "last_classified", "percentile"]
