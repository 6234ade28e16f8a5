"""The service benchmark's clock: a burst ends when the service committed its last label,
read from the store (the UTC `classified_at` of the burst's last batch), not when the
benchmark's poll happened to look."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import pytest

from labelsd import records
from labelsd.pipeline.writer import commit_outcomes
from labelsd.records import Outcome, OutcomeKind, Prediction
from labelsd.store import workqueue
from labelsd.store.engine import open_store
from servicebench import last_classified

PREDICTIONS = [Prediction(1, "tabby", "n02123045", 281, 0.5), Prediction(2, "tiger cat", "n02123159", 282, 0.3),
               Prediction(3, "Egyptian cat", "n02124075", 285, 0.1)]


def _classify(store, paths: list[str]) -> None:
    """Queue, claim and write `paths` as one labelled batch, as the pipeline's writer does."""
    workqueue.enqueue(store, [records.FileFacts(p, 10 + i, 1_000 + i) for i, p in enumerate(paths)])
    claims = workqueue.claim(store, "bench:1", len(paths))
    assert {c.path for c in claims} == set(paths)
    outcomes = [Outcome(c, OutcomeKind.CLASSIFIED, sha256=hashlib.sha256(c.path.encode()).hexdigest(),
                        size=10, mtime_ns=1_000, width=4000, height=3000, format="JPEG", model="m",
                        predictions=list(PREDICTIONS))
                for c in claims]
    assert commit_outcomes(store, "bench:1", outcomes, threading.Event())


@pytest.fixture
def far_from_utc(monkeypatch):
    """A local time zone nine hours from UTC: a stored time read as local time is nine hours off."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_burst_ends_at_the_commit_of_its_last_batch(tmp_path, far_from_utc):
    db = tmp_path / "labels.db"
    first, second = [f"/photos/a{i}.jpg" for i in range(3)], [f"/photos/b{i}.jpg" for i in range(2)]
    with open_store(str(db)) as store:
        _classify(store, first)
        before = time.time()
        _classify(store, second)
        after = time.time()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        end = last_classified(conn, first + second)
        assert end is not None and before <= end <= after  # the second batch's commit, in UTC
        assert last_classified(conn, first) < before  # the latest of the paths asked about only
        assert last_classified(conn, ["/photos/never.jpg"]) is None
    finally:
        conn.close()
