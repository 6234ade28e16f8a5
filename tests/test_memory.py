"""Memory given back at rest: freed heap pages once the pipeline is idle (malloc_trim),
and glibc's arenas capped (labelsd.pipeline.memory)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from imagegen import make_image
from labelsd import records
from labelsd.model.classifier import load_classifier
from labelsd.pipeline import memory
from labelsd.pipeline.runner import Pipeline
from labelsd.store import workqueue
from servicekit import wait_for

glibc = pytest.mark.skipif(memory._glibc() is None, reason="glibc's malloc only")

# Half of 3000 blocks of 48 KiB freed, the other half kept: the free pages lie between
# live blocks, so glibc cannot shrink the heap by itself; malloc_trim gives them back.
_FRAGMENTED = """
import re, sys, threading
from labelsd.pipeline import memory
rss = lambda: int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read())[1]) // 1024
kept = []
def work():
    blocks = [bytearray(48 << 10) for _ in range(3000)]
    kept.extend(blocks[::2])
thread = threading.Thread(target=work)  # a thread's arena, as the decode threads have
thread.start(); thread.join()
before = rss()
released = memory.release_free_memory()
print(before, rss(), released)
"""


@glibc
def test_free_heap_pages_go_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after, released = out.stdout.split()
    assert released == "True" and int(before) - int(after) > 50, out.stdout  # ~70 MiB freed inside


@glibc
def test_arenas_can_be_capped():
    assert memory.limit_arenas(8) is True  # this process keeps glibc's default otherwise


@pytest.fixture(scope="module")
def classifier(weights_files):
    return load_classifier(weights_files.legacy_h5, device="cpu", batch_size=4)


def _enqueue(store, paths):
    workqueue.enqueue(store, [records.FileFacts(str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns)
                              for p in paths])


def test_the_pipeline_gives_memory_back_once_per_idle_spell(store, classifier, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "release_free_memory",
                        lambda: calls.append(threading.current_thread().name) or True)
    with Pipeline(store, classifier, "test:1", idle_wait_s=0.05) as pipe:
        for burst in (1, 2):
            _enqueue(store, [make_image(tmp_path / f"b{burst}-{i}.jpg", seed=10 * burst + i) for i in range(5)])
            pipe.wake()
            assert pipe.wait_idle(120)
            wait_for(lambda n=burst: len(calls) == n, 60, f"the release after burst {burst}",
                     interval=0.02)
            assert pipe.done == 5 * burst
        # What must NOT happen has no event to wait for: about six more empty claims
        # (idle_wait_s 0.05) with nothing new, and no more releases.
        time.sleep(0.3)
    assert calls == ["labelsd-pipeline-claimer"] * 2
