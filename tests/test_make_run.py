"""`make run`: what it runs (scripts/make_run.py around labelsd) prints, once the
service is ready, the one line that queries it from another terminal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from servicekit import LABELSD

ROOT = Path(__file__).resolve().parent.parent


def test_make_run_prints_the_line_to_query_it(tmp_path, weights_file):
    """`make run`'s wrapper prints one line once labelsd is ready, and that line,
    typed in another terminal, queries it."""
    db, inbox = tmp_path / "labels.db", tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "empty.toml"
    config.touch()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "LABELS_CONFIG": str(config), "KERAS_HOME": str(tmp_path / "keras"),
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    if shutil.which("labels", path=env["PATH"]):
        pytest.skip("a `labels` on /usr/bin or /bin would be the one printed")
    log = tmp_path / "labelsd.log"
    with open(log, "wb") as err:
        wrapper = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "make_run.py"), "--db", str(db), "--",
             str(LABELSD), "--watch", str(inbox), "--db", str(db), "--weights", str(weights_file)],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        line = wrapper.stdout.readline()  # the wrapper prints nothing else
        assert line.startswith("labelsd is ready. Query it from another terminal:  "), (
            line + log.read_text(errors="replace")[-3000:])
        command = line.split("terminal:", 1)[1].split()
        assert command == [str(LABELSD.with_name("labels")), "--db", str(db), "search", "cat"]
        status = subprocess.run([*command[:3], "status", "--json"], capture_output=True, text=True,
                                env=env, timeout=60)
        facts = json.loads(status.stdout)
        assert facts["running"] is True  # ready means running
        # the defaults: `auto` measured the precisions on this CPU and says which it runs and why
        assert facts["auto"]["chosen"] == facts["precision"] and facts["auto"]["why"].startswith("auto: ")
        query = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert query.returncode == 0, query.stderr
        wrapper.send_signal(signal.SIGTERM)  # as Ctrl-C's end of the story: labelsd drains
        assert wrapper.wait(60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(10)
