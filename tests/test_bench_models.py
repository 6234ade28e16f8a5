"""bench/throughput.py --model: the models side by side, end to end (one model, two
photos, one round, to stay short). No timing assertions, as in test_bench.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "throughput.py"


@pytest.mark.tf
@pytest.mark.timeout(400)
def test_model_comparison_prints_each_models_figures(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABELS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(CUDA_VISIBLE_DEVICES="", KERAS_HOME=str(tmp_path / "keras"))
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--model", "efficientnet_lite0", "--images", "2",
         "--rounds", "1", "--device", "cpu", "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=360, env=env, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, f"benchmark failed ({proc.returncode})\n{out}\n{proc.stderr[-3000:]}"
    line = next((x for x in out.splitlines() if x.startswith("efficientnet_lite0 ")), "")
    for figure in ("bare forward", "pipeline (scan)", "service burst", "decode ceiling"):
        assert figure in line, out
    assert "models efficientnet_lite0," in out and "service ready" in out
