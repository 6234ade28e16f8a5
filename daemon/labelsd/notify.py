"""systemd's readiness protocol (sd_notify), without libsystemd.

The protocol is small and documented (sd_notify(3)): newline-separated
`KEY=VALUE` assignments in one datagram to the AF_UNIX socket named by
$NOTIFY_SOCKET (a path, or an abstract address written with a leading `@`).
Without NOTIFY_SOCKET every call is a silent no-op, so the service runs the same
from a terminal. Errors are logged at debug level and never raised: telling
systemd how we are doing must not be able to take the service down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from labelsd.loopthread import LoopThread

log = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock: addresses and others this daemon does not speak


class Notifier:
    """Sends sd_notify messages to $NOTIFY_SOCKET (read once, at construction)."""

    def __init__(self, env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        if raw and self.address is None:
            log.debug("NOTIFY_SOCKET=%s is not a unix socket address; not notifying", raw)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.watchdog_interval_s = watchdog_interval(env)

    def send(self, *assignments: str) -> bool:
        """Send `READY=1`, `STATUS=...` etc. in one datagram. True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message, self.address)
                return True
            except OSError as err:
                log.debug("sd_notify %r failed: %s", assignments, err)
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        # RELOADING=1 wants MONOTONIC_USEC= too (systemd >= 253 checks it for Type=notify-reload).
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Half of $WATCHDOG_USEC in seconds (how often to ping), or None when systemd
    asked for no watchdog, or asked it of another process ($WATCHDOG_PID)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid.strip() != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000


class _StartExtender(LoopThread):
    def __init__(self, notifier: Notifier, every_s: float, by_s: float, at_most_s: float):
        self.notifier = notifier
        self.every_s = every_s
        self.by_s = by_s
        self.at_most_s = at_most_s
        super().__init__("sd-extend-start")

    def _run(self) -> None:
        until = time.monotonic() + self.at_most_s
        while time.monotonic() < until:
            self.notifier.send(f"EXTEND_TIMEOUT_USEC={int(self.by_s * 1_000_000)}")
            if self._stop.wait(self.every_s):
                return


@contextmanager
def start_timeout_extended(notifier: Notifier, every_s: float = 20.0, by_s: float = 60.0,
                           at_most_s: float = 3600.0) -> Iterator[None]:
    """While the block runs, tell systemd every `every_s` to allow `by_s` more for the
    start (EXTEND_TIMEOUT_USEC, systemd 236 and later; older ones ignore it), for at
    most `at_most_s`: opening a large library the first time after an upgrade
    migrates it (SQLite, a million images: 25 s; ten million would pass
    TimeoutStartSec=300), and the first start converts the model. A start stuck in
    the block for over `at_most_s` is let go: the messages stop, and `by_s` later
    systemd's start timeout ends it."""
    extender = _StartExtender(notifier, every_s, by_s, at_most_s).start()
    try:
        yield
    finally:
        extender.stop()


class WatchdogPinger(LoopThread):
    """Sends WATCHDOG=1 every `interval_s` while `healthy()` says the work loop
    is alive. A hung pipeline makes `healthy()` false, the pings stop, and
    systemd restarts the service (WatchdogSec=)."""

    def __init__(self, notifier: Notifier, interval_s: float, healthy: Callable[[], bool]):
        self.notifier = notifier
        self.interval_s = interval_s
        self.healthy = healthy
        self._warned = False
        super().__init__("sd-watchdog")

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.healthy():
                self.notifier.watchdog()
                self._warned = False
            elif not self._warned:
                log.error("the pipeline made no progress for too long; "
                          "withholding the systemd watchdog ping so the service is restarted")
                self._warned = True
            self._stop.wait(self.interval_s)
