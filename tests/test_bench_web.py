"""bench/web.py runs end to end on a small library and prints every figure of the
issue's goals (no timing assertions here: the goals live in the benchmark's output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "web.py"


def test_web_benchmark_prints_every_figure(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--images", "2000", "--runs", "1",
                           "--clients", "4", "--load-s", "1", "--requests", "100", "--db", str(tmp_path / "bench.db")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for figure in ("(a) /search?q=cat first page", "(b) /api/search?q=cat", "12 MP thumbnail, cold",
                   "12 MP thumbnail, warm", "(d) ready", "(e) RSS after 100 requests",
                   "(f) 4 clients, 1 s", " 0 errors", "(g) /photo/<sha>", "/photo/<sha>/similar (12 tiles)",
                   "exit status after SIGTERM: 0"):
        assert figure in done.stdout, (figure, done.stdout)
