"""systemd/labels-web.service, `labels serve` as a second system unit: it verifies,
runs the installed `labels serve` on loopback as the service's user against the
system config, and is hardened further than labelsd.service (no TensorFlow, no GPU)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from webkit import LABELS

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "labels-web.service"


def _analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; `make test` does)")
    return analyze


def test_the_unit_verifies(tmp_path):
    # verify checks that ExecStart's binary exists: point it at this venv's labels
    unit = tmp_path / "labels-web.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={LABELS}", UNIT.read_text(), flags=re.M))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    run = subprocess.run([_analyze(), "--system", "verify", str(unit)], capture_output=True,
                         text=True, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=60)
    # unknown keys and bad values are only warnings: any output is a failure here
    assert run.returncode == 0 and run.stdout.strip() == "" and run.stderr.strip() == "", (
        run.stdout + run.stderr)


def test_the_unit_serves_the_system_library_on_loopback_hardened():
    lines = {line.strip() for line in UNIT.read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    for wanted in ("ExecStart=/usr/local/bin/labels --config /etc/labels/config.toml serve "
                   "--host 127.0.0.1 --port 8470",
                   "User=labelsd", "Group=labels", "UMask=0007", "ReadWritePaths=/var/lib/labelsd",
                   "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateDevices=yes",
                   "MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=",
                   "CacheDirectory=labels-web", "Environment=XDG_CACHE_HOME=/var/cache/labels-web"):
        assert wanted in lines, wanted


def test_the_units_exposure_is_low():
    run = subprocess.run([_analyze(), "security", "--offline=yes", str(UNIT)], capture_output=True,
                         text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    if found is None and "--offline" in run.stderr:
        pytest.skip(f"this systemd-analyze has no --offline (systemd 250 or later has): {run.stderr}")
    assert found, run.stdout + run.stderr
    assert float(found.group(1)) <= 2.0
