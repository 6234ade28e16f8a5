"""Run the real `labelsd` as a subprocess and wait for conditions with deadlines.

Shared by the service tests and the benchmarks (which measure the same service
from outside); it lives in bench/, which pytest's `pythonpath` puts on sys.path.

Nothing here sleeps for a fixed time to "let things happen": every wait polls a
condition (the database, the service's log, the process) until a deadline and
fails with what it was waiting for and the tail of the service's log.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

LABELSD = Path(sys.executable).with_name("labelsd")
START_TIMEOUT_S = 180  # importing TensorFlow and warming InceptionV3 on 2 busy cores
CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             interval: float = 0.2, on_timeout: Callable[[], str] | None = None):
    """Poll `condition` until it returns something truthy (returned) or `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


def service_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with no developer config, database or keras cache in reach."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABELS_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM"))}
    env.update(XDG_CONFIG_HOME=str(home / "xdg-config"), XDG_DATA_HOME=str(home / "xdg-data"),
               KERAS_HOME=str(home / "keras"), HOME=str(home), PYTHONUNBUFFERED="1",
               CUDA_VISIBLE_DEVICES="")
    # An empty config file of our own, so a machine's /etc/labels/config.toml
    # (a real installation beside the test run) never leaks into the service.
    own_config = home / "empty-config.toml"
    own_config.parent.mkdir(parents=True, exist_ok=True)
    own_config.touch()
    env["LABELS_CONFIG"] = str(own_config)
    env.update(extra)
    return env


class Service:
    """One `labelsd` process, its log file, and the waits tests need."""

    def __init__(self, workdir: Path, *, db: Path, weights: Path, watch: Iterable[Path] = (),
                 args: Iterable[str] = (), env: dict[str, str] | None = None, name: str = "labelsd"):
        self.workdir = Path(workdir)
        self.db = Path(db)
        self.argv = [str(LABELSD), "--db", str(db), "--weights", str(weights)]
        # fp32, not auto: auto measures bf16 against fp32 once per cache folder (a minute,
        # and each test has a HOME of its own) and its pick may differ between machines.
        # fp32 runs on LiteRT where installed (converted once per weights file; `args` may override).
        self.argv += ["--precision", "fp32"]
        for folder in watch:
            self.argv += ["--watch", str(folder)]
        self.argv += list(args)
        self.env = env or service_env(self.workdir)
        self.name = name
        self.runs = 0
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    # ---- process ---------------------------------------------------------------

    def start(self, extra_args: Iterable[str] = ()) -> Service:
        self.runs += 1
        self.log_path = self.workdir / f"{self.name}-{self.runs}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*self.argv, *extra_args], stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         cwd=self.workdir)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> Service:
        """Until the service logged that the model is loaded and the watch is up."""
        self.wait_log("labelsd: ready:", timeout)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"labelsd did not exit within {timeout:.0f}s\n{self.tail()}") from None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; kill -9 if it hangs (and say so by the return code)."""
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    # ---- log -------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def all_logs(self) -> str:
        return "".join((self.workdir / f"{self.name}-{n}.log").read_text(errors="replace")
                       for n in range(1, self.runs + 1))

    def tail(self, lines: int = 40) -> str:
        return "--- labelsd log (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, text: str, timeout: float) -> None:
        def seen():
            if text in self.log():
                return True
            if not self.alive():
                raise AssertionError(f"labelsd exited ({self.proc.returncode}) before logging "
                                     f"{text!r}\n{self.tail()}")
            return False

        wait_for(seen, timeout, f"{text!r} in the log", on_timeout=self.tail)

    # ---- database --------------------------------------------------------------

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """A read on the service's SQLite file (its own connection; WAL lets it
        run beside the service's writes)."""
        if not self.db.exists():
            return []
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(sql, params).fetchall()

    def statuses(self) -> dict[str, str]:
        """path -> status, derived as docs/contract.md says (missing, failed, pending, done)."""
        rows = self.query("""
            SELECT p.path,
                   CASE WHEN p.missing THEN 'missing'
                        WHEN q.state = 'failed' THEN 'failed'
                        WHEN q.id IS NOT NULL THEN 'pending'
                        WHEN c.status IS NULL THEN 'pending'
                        ELSE c.status END
            FROM paths p LEFT JOIN contents c ON c.sha256 = p.sha256
                         LEFT JOIN queue q ON q.path = p.path""")
        return dict(rows)

    def wait_settled(self, paths: Iterable[Path | str], timeout: float,
                     want: tuple[str, ...] = ("done", "failed")) -> dict[str, str]:
        """Until every path has a status in `want`; returns their statuses."""
        wanted = [str(p) for p in paths]

        def settled():
            if not self.alive():
                raise AssertionError(f"labelsd died ({self.proc.returncode})\n{self.tail()}")
            now = self.statuses()
            got = {p: now.get(p) for p in wanted}
            return got if all(s in want for s in got.values()) else None

        def report():
            now = self.statuses()
            late = [f"{p}: {now.get(p)}" for p in wanted if now.get(p) not in want][:10]
            return "not yet: " + "; ".join(late) + "\n" + self.tail()

        return wait_for(settled, timeout, f"{len(wanted)} image(s) to reach {want}",
                        interval=0.3, on_timeout=report)

    def count_with_status(self, paths: Iterable[Path | str], status: str) -> int:
        now = self.statuses()
        return sum(1 for p in paths if now.get(str(p)) == status)

    def predictions_per_content(self) -> dict[str, int]:
        return dict(self.query("SELECT sha256, count(*) FROM predictions GROUP BY sha256"))

    def path_row(self, path: Path | str) -> tuple | None:
        rows = self.query("SELECT sha256, missing FROM paths WHERE path = ?", (str(path),))
        return rows[0] if rows else None

    def tags_of(self, path: Path | str) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT t.tag FROM tags t JOIN paths p ON p.sha256 = t.sha256 WHERE p.path = ? "
            "ORDER BY t.tag", (str(path),))]

    def integrity(self) -> str:
        return self.query("PRAGMA integrity_check")[0][0]


class FakeInotify:
    """Stands in for watchdog's InotifyObserver in an in-process `Watcher`
    (`inotify_factory=FakeInotify`): starts and stops at once, and its watches
    never report an event, as when the kernel dropped them. Subclass it and
    override `schedule` to fail the way a test needs."""

    def start(self):
        pass

    def schedule(self, *args, **kwargs):
        return object()

    def stop(self):
        pass

    def is_alive(self):
        return False


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cpu_idle(service: Service, seconds: float = 5.0) -> float:
    """CPU seconds the service used over `seconds` of wall time (it must be idle)."""
    before = service.cpu_seconds()
    time.sleep(seconds)  # the measurement window itself, not a wait for a condition
    return service.cpu_seconds() - before
