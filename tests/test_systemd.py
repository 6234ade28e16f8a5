"""labelsd under systemd: the unit files verify, the sd_notify protocol is
spoken (READY=1 only once the model is loaded, WATCHDOG=1 while healthy,
STATUS=, STOPPING=1), and SIGHUP adds a watched folder without a restart."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from imagegen import make_image
from labelsd.config import load_settings
from labelsd.notify import Notifier, WatchdogPinger, watchdog_interval
from servicekit import LABELSD, Service, service_env, wait_for

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def unit_lines(name: str) -> list[str]:
    """The unit's settings, comments dropped."""
    return [line.strip() for line in (UNITS / name).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", ";"))]


# --------------------------------------------------------------------------- unit files


@pytest.mark.parametrize("name, mode", [("labelsd.service", "--system"),
                                        ("labelsd-user.service", "--user")])
def test_unit_files_verify(tmp_path, name, mode):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; `make test` does)")
    # verify checks that ExecStart's binary exists: point it at this venv's labelsd
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={LABELSD}", (UNITS / name).read_text(),
                  flags=re.M)
    unit = tmp_path / "labelsd.service"
    unit.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    run = subprocess.run([analyze, mode, "verify", str(unit)], capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    # unknown keys and bad values are only warnings: any output is a failure here
    assert run.stdout.strip() == "" and run.stderr.strip() == "", run.stdout + run.stderr


def test_system_unit_is_notify_watchdog_and_hardened():
    lines = set(unit_lines("labelsd.service"))
    for wanted in ("Type=notify", "NotifyAccess=main", "Restart=on-failure",
                   "ExecStart=/usr/local/bin/labelsd --config /etc/labels/config.toml",
                   "User=labelsd", "StateDirectory=labelsd", "ReadWritePaths=/var/lib/labelsd",
                   "Environment=KERAS_HOME=/var/lib/labelsd/keras", "NoNewPrivileges=yes",
                   "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes",
                   "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
                   "ProtectControlGroups=yes", "RestrictNamespaces=yes", "LockPersonality=yes",
                   "RestrictRealtime=yes", "SystemCallArchitectures=native",
                   # the library is shared with the group `labels` (README: who may use it)
                   "Group=labels", "StateDirectoryMode=2770", "UMask=0007",
                   "SystemCallFilter=@system-service", "DevicePolicy=closed",
                   "DeviceAllow=char-nvidia-frontend rw", "DeviceAllow=char-nvidia-uvm rw",
                   # the notify socket and PostgreSQL's socket; PostgreSQL over TCP, --metrics
                   "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                   "Documentation=file:///opt/labelsd/src/README.md man:systemd.exec(5)"):
        assert wanted in lines, wanted
    keys = {line.split("=", 1)[0] for line in lines}
    assert "PrivateDevices" not in keys  # the GPU's /dev/nvidia* must stay visible
    assert "MemoryDenyWriteExecute" not in keys  # TensorFlow's JIT needs W+X pages
    assert "ProcSubset" not in keys  # the NVIDIA libraries read /proc/driver/nvidia
    settings = dict(line.split("=", 1) for line in lines if "=" in line)
    assert int(settings["WatchdogSec"]) >= 30
    assert int(settings["TimeoutStopSec"]) >= 15  # the ~10 s drain fits


def _exposure(*args: str) -> float:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; `make test` does)")
    run = subprocess.run([analyze, *args], capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    if found is None and "--offline" in run.stderr:
        pytest.skip(f"this systemd-analyze has no --offline (systemd 250 or later has): {run.stderr}")
    assert found, run.stdout + run.stderr
    return float(found.group(1))


def test_system_unit_exposure_is_low():
    # What `systemd-analyze security` still lists is what labelsd needs: the network
    # (PostgreSQL, --metrics), the GPU's devices, W+X memory for TensorFlow's JIT,
    # the users' groups (PrivateUsers would hide the groups that let it read photos).
    assert _exposure("security", "--offline=yes", str(UNITS / "labelsd.service")) <= 2.5


def test_user_unit_has_what_a_user_manager_enforces():
    lines = set(unit_lines("labelsd-user.service"))
    for wanted in ("NoNewPrivileges=yes", "SystemCallFilter=@system-service",
                   "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "RestrictNamespaces=yes",
                   "RestrictSUIDSGID=yes", "LockPersonality=yes", "UMask=0077",
                   "ExecStart=%h/.local/bin/labelsd --watch %h/Pictures/inbox"):
        assert wanted in lines, wanted
    keys = {line.split("=", 1)[0] for line in lines}
    assert not keys & {"User", "Group", "MemoryDenyWriteExecute", "PrivateDevices"}
    assert not any("/opt/labelsd" in line for line in lines)  # a user install lives elsewhere


def test_example_config_is_valid(monkeypatch, tmp_path):
    settings = load_settings(str(UNITS / "config.toml"), env={})
    assert settings.watch and settings.db == "/var/lib/labelsd/labels.db"
    assert (settings.batch_size, settings.device, settings.poll, settings.log_level) == (
        None, "auto", False, "info")  # batch size unset: chosen for the device
    # `labels model info` of a member looks in the service's keras cache: the config says
    # where it is, the same folder the unit gives the service as KERAS_HOME
    assert f"Environment=KERAS_HOME={settings.keras_home}" in unit_lines("labelsd.service")


# --------------------------------------------------------------------------- sd_notify


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str, on_message=None):
        self.address = address
        self.messages: list[tuple[float, str]] = []
        self.on_message = on_message
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except (TimeoutError, socket.timeout):
                continue
            for line in data.splitlines():
                self.messages.append((time.monotonic(), line))
                if self.on_message:
                    self.on_message(line)

    def lines(self, prefix: str = "") -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_notifier_speaks_the_protocol(tmp_path):
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    abstract = NotifyListener(f"@labelsd-test-{os.getpid()}")
    try:
        assert not Notifier(env={}).ready()  # no NOTIFY_SOCKET: a silent no-op
        Notifier(env={"NOTIFY_SOCKET": listener.address}).ready("watching 1 folder")
        Notifier(env={"NOTIFY_SOCKET": abstract.address}).stopping()
        wait_for(lambda: listener.lines() == ["READY=1", "STATUS=watching 1 folder"], 5, "READY")
        wait_for(lambda: abstract.lines() == ["STOPPING=1"], 5, "STOPPING on an @ address")
    finally:
        listener.close()
        abstract.close()

    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


class _PingRecorder(Notifier):
    """A Notifier that also notes when each watchdog ping was sent."""

    def __init__(self, env: dict[str, str]):
        super().__init__(env=env)
        self.pinged_at: list[float] = []

    def watchdog(self) -> bool:
        self.pinged_at.append(time.monotonic())
        return super().watchdog()


def test_watchdog_pings_stop_when_the_pipeline_hangs(tmp_path):
    listener = NotifyListener(str(tmp_path / "wd.sock"))
    progressing = threading.Event()
    progressing.set()
    unhealthy_at: list[float] = []  # each time the pinger was told "no progress"

    def healthy() -> bool:
        if progressing.is_set():
            return True
        unhealthy_at.append(time.monotonic())
        return False

    notifier = _PingRecorder(env={"NOTIFY_SOCKET": listener.address})
    pinger = WatchdogPinger(notifier, 0.05, healthy)
    try:
        pinger.start()
        wait_for(lambda: len(listener.lines("WATCHDOG=1")) >= 3, 5, "pings while healthy")
        progressing.clear()  # the pipeline stops making progress
        # Ten intervals of "unhealthy" answers, counted rather than slept through;
        # the pinger is one thread, so no ping may follow its first such answer.
        wait_for(lambda: len(unhealthy_at) >= 10, 5, "ten unhealthy checks", interval=0.02)
        assert max(notifier.pinged_at) < unhealthy_at[0]
    finally:
        pinger.stop()
        listener.close()


def test_service_notifies_systemd_and_reloads_watched_folders(tmp_path, weights_files):
    home = Path(os.path.realpath(tmp_path))
    first, second = home / "first", home / "second"
    first.mkdir()
    second.mkdir()
    config = home / "config.toml"
    config.write_text(f'watch = ["{first}"]\n')
    db = home / "labels.db"
    address = f"@labelsd-test-notify-{os.getpid()}"
    svc = Service(home, db=db, weights=weights_files.legacy_h5, args=["--config", str(config)],
                  env=service_env(home, NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000",
                                  JOURNAL_STREAM="8:4242"))
    seen_at_ready: dict[str, object] = {}

    def on_message(line: str):
        if line == "READY=1" and not seen_at_ready:
            seen_at_ready["log"] = svc.log()
            seen_at_ready["model"] = svc.query("SELECT model FROM nodes")

    listener = NotifyListener(address, on_message)
    try:
        svc.start()
        wait_for(lambda: "READY=1" in listener.lines(), 180, "READY=1", on_timeout=svc.tail)
        # ready only once the model is loaded and warm, the node registered, the watch up
        assert "warmed up" in seen_at_ready["log"] and "watching " in seen_at_ready["log"]
        assert seen_at_ready["model"] and seen_at_ready["model"][0][0].startswith("InceptionV3")
        assert any(s.startswith("STATUS=watching 1 folder, ") for s in listener.lines("STATUS="))
        wait_for(lambda: len(listener.lines("WATCHDOG=1")) >= 3, 10, "repeated WATCHDOG=1")

        # journald format: a priority prefix, no timestamp of our own
        assert re.search(r"^<6>labelsd: ready: watching 1 folder", svc.log(), re.M)
        assert not re.search(r"^\d{4}-\d\d-\d\d ", svc.log(), re.M)

        # SIGHUP with a second folder in the config: watched without a restart
        config.write_text(f'watch = ["{first}", "{second}"]\n')
        svc.signal(signal.SIGHUP)
        svc.wait_log("reloaded the config", 30)
        assert "RELOADING=1" in listener.lines()
        photo = make_image(home / "photo.jpg", size=(320, 240), seed=5)
        shutil.copy(photo, second / "photo.jpg")
        svc.wait_settled([second / "photo.jpg"], 60, want=("done",))
        wait_for(lambda: any(s.startswith("STATUS=watching 2 folders")
                             for s in listener.lines("STATUS=")), 10, "STATUS with 2 folders")

        svc.signal(signal.SIGTERM)
        assert svc.wait_exit(15) == 0, svc.tail()
        wait_for(lambda: "STOPPING=1" in listener.lines(), 5, "STOPPING=1")
        assert svc.alive() is False
    finally:
        if svc.alive():
            svc.proc.kill()
        listener.close()


def test_a_long_start_step_keeps_extending_systemds_start_timeout(tmp_path):
    """A migration of a large library or a first model conversion can outlast
    TimeoutStartSec: while it runs, EXTEND_TIMEOUT_USEC goes out every interval; once
    it is over, or has run longer than the cap, no more."""
    from labelsd.notify import start_timeout_extended

    class Recorder(Notifier):
        def __init__(self, env):
            super().__init__(env=env)
            self.sent: list[tuple[float, tuple[str, ...]]] = []

        def send(self, *assignments: str) -> bool:
            self.sent.append((time.monotonic(), assignments))
            return super().send(*assignments)

    listener = NotifyListener(str(tmp_path / "extend.sock"))
    notifier = Recorder({"NOTIFY_SOCKET": listener.address})
    try:
        with start_timeout_extended(notifier, every_s=0.05, by_s=60):
            wait_for(lambda: len(listener.lines()) >= 3, 5, "extensions while the step runs")
        ended = time.monotonic()
        assert set(listener.lines()) == {"EXTEND_TIMEOUT_USEC=60000000"}
        assert max(at for at, _ in notifier.sent) < ended  # none after the step

        notifier.sent.clear()
        with start_timeout_extended(notifier, every_s=0.05, by_s=60, at_most_s=0.2):
            time.sleep(0.6)  # the step: stuck past the cap
        times = [at for at, _ in notifier.sent]
        assert times and max(times) - min(times) < 0.2  # let go once the cap had passed
    finally:
        listener.close()
