"""bench/throughput.py --quick runs end to end and prints every figure.

No timing assertions: the speed goals live in the benchmark's output, not in
tests that would fail on a busy CI machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "throughput.py"

FIGURES = [
    "(a) bare forward:", "(a) pipeline (scan):", "(a) seed loop:", "(a) pipeline/seed",
    "(a) model timeline: busy", "(b) service burst:", "(c) single drop:", "(d) peak RSS:",
    "(e) idle CPU:", "(f) start to READY:",
    "(a) photo metadata (EXIF, IPTC, XMP, sidecar):",
]


@pytest.mark.timeout(400)
def test_quick_benchmark_prints_every_figure(tmp_path, weights_file):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABELS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--weights", str(weights_file),
         "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=360, env=env, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, f"benchmark failed ({proc.returncode})\n{out}\n{proc.stderr[-3000:]}"
    missing = [f for f in FIGURES if f not in out]
    assert not missing, f"figures not printed: {missing}\n{out}"
    assert "no GPU on this machine" in out  # CUDA_VISIBLE_DEVICES is empty
    assert "batch size 8," in out and "device cpu;" in out  # the service's CPU defaults
    assert "(0 failed)" in out, out


def test_pipeline_ceiling_on_shared_cores_and_beside_a_gpu():
    """The ceiling the benchmark prints: decoding shares the cores with the model on
    a CPU, and only feeds it on a GPU."""
    from benchkit import pipeline_ceiling  # bench/ is on pytest's pythonpath
    # this machine: 17.5 img/s bare, 51 ms of decoding per 12 MP photo, 2 cores
    assert pipeline_ceiling(17.5, 0.051, 2, on_gpu=False) == pytest.approx(0.69, abs=0.01)
    # a GPU at 2000 img/s fed by 16 cores decoding ~314 img/s
    assert pipeline_ceiling(2000.0, 0.051, 16, on_gpu=True) == pytest.approx(0.157, abs=0.001)
    assert pipeline_ceiling(100.0, 0.051, 16, on_gpu=True) == 1.0  # decoders keep up


def test_decode_floor_bench_prints_each_decoder_beside_pillow(tmp_path):
    """bench/decodebench.py: the CPU first, then Pillow and each alternative (or why it is not
    there: they are not dependencies of labelsd)."""
    proc = subprocess.run([sys.executable, str(BENCH.with_name("decodebench.py")), "--images", "2",
                           "--rounds", "1", "--cache", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(BENCH.parent), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("CPU: ")
    assert any(line.split()[:3] == ["Pillow", "draft", "+"] and "1.00x" in line for line in lines), proc.stdout
    for name in ("simplejpeg scaled decode", "pyvips shrink-on-load", "labelsd decode_image"):
        assert any(line.strip().startswith(name) for line in lines), proc.stdout
