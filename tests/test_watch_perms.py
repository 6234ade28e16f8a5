"""A subfolder the service cannot read (issue 14, item 7): said at WARNING
once, and its photos picked up once it is made readable, without a restart.
Root reads every folder, so the watcher runs as another user (setpriv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import reachable

CHILD = Path(__file__).with_name("watch_perms_child.py")
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to drop to another user")


@pytest.fixture
def unprivileged_home():
    home = Path(tempfile.mkdtemp(prefix="labelsd-perms-"))
    os.chown(home, NOBODY, NOBODY)
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_unreadable_folder_is_said_once_and_picked_up_when_readable(unprivileged_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELS_")}
    env["HOME"] = str(unprivileged_home)
    # this venv's Python and the child's code, reachable by that user (tests/reachable.py)
    child = subprocess.run(reachable.wrap(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, str(CHILD), str(unprivileged_home)]),
        capture_output=True, text=True, timeout=120, env=env, cwd=unprivileged_home)
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["ok_queued"] and not result["locked_readable_at_start"], result
    said = [w for w in result["warnings"] if "locked" in w and "cannot read" in w]
    assert len(said) == 1, result["warnings"]
    assert result["inside_queued"], result
    assert result["later_queued"], result
