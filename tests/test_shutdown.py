"""Stopping never hangs on a stuck reader (issue 31). A read that never returns (a
hung network share) must not hold Pipeline.stop(): it returns within its
timeout, the stuck photo's claim goes back to the queue counted as an attempt
(a file that hangs every time ends failed, not claimed for ever), the others are
handed back as before. A claim the claimer took while the pipeline was stopping
is handed back without `RuntimeError: cannot schedule new futures after
shutdown`. The service itself (tests/test_shutdown_service.py) exits within its
shutdown deadline whatever hangs."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
from sqlalchemy import select

from imagegen import make_image
from labelsd import records
from labelsd.model.classifier import load_classifier
from labelsd.pipeline import claimer as claimer_mod
from labelsd.pipeline import reader as reader_mod
from labelsd.pipeline.runner import Pipeline
from labelsd.store import workqueue
from labelsd.store.engine import open_store
from labelsd.store.schema import QueueItem
from servicekit import wait_for


@pytest.fixture(scope="module")
def classifier(weights_files):
    return load_classifier(weights_files.legacy_h5, device="cpu", batch_size=4)


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "labels.db"))
    yield s
    s.close()


def rows(store) -> dict[str, tuple]:
    with store.read() as session:
        return {r.path: (r.claimed_by, r.attempts, r.last_error) for r in session.execute(
            select(QueueItem.path, QueueItem.claimed_by, QueueItem.attempts, QueueItem.last_error))}


def stop_within(pipe: Pipeline, timeout: float, limit: float) -> float:
    """pipe.stop(timeout) on a thread; how long it took (fails past `limit`)."""
    began = time.monotonic()
    stopper = threading.Thread(target=pipe.stop, kwargs={"timeout": timeout}, daemon=True)
    stopper.start()
    stopper.join(limit)
    assert not stopper.is_alive(), f"Pipeline.stop() still waiting after {limit} s"
    return time.monotonic() - began


def test_stop_does_not_wait_for_a_stuck_read(store, classifier, tmp_path, monkeypatch):
    never = threading.Event()
    real_read = reader_mod.read_file

    def read_file(path, *args, **kwargs):
        if os.path.basename(path).startswith("stuck"):
            never.wait()  # a read that never returns
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(reader_mod, "read_file", read_file)
    stuck, fine = make_image(tmp_path / "stuck.jpg", seed=1), make_image(tmp_path / "fine.jpg", seed=2)
    pipe = Pipeline(store, classifier, "test:1", decode_workers=2).start()
    try:
        workqueue.enqueue(store, [records.FileFacts(str(fine))])
        pipe.wake()
        wait_for(lambda: store.record(str(fine)).status == "done", 120, "the fine photo")
        workqueue.enqueue(store, [records.FileFacts(str(stuck))])
        pipe.wake()
        wait_for(lambda: rows(store)[str(stuck)][0] is not None, 60, "the stuck photo's claim")
        took = stop_within(pipe, timeout=2, limit=20)
    finally:
        never.set()  # let the stuck thread go, whatever happened
    assert took < 8, took
    claimed_by, attempts, error = rows(store)[str(stuck)]
    assert claimed_by is None and attempts == 1, rows(store)
    assert "did not finish" in error


def test_a_claim_taken_while_stopping_is_handed_back_without_an_error(store, classifier, tmp_path,
                                                                      monkeypatch, caplog):
    entered, release = threading.Event(), threading.Event()
    real_claim = workqueue.claim

    def slow_claim(*args, **kwargs):
        entered.set()
        release.wait(30)  # the database answers only once stop() has given up on this thread
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(claimer_mod.workqueue, "claim", slow_claim)
    photo = make_image(tmp_path / "late.jpg", seed=3)
    workqueue.enqueue(store, [records.FileFacts(str(photo))])
    pipe = Pipeline(store, classifier, "test:1", decode_workers=2).start()
    claimer_thread = next(t for t in pipe._threads if t.name.endswith("claimer"))
    with caplog.at_level(logging.INFO):
        assert entered.wait(30)
        stop_within(pipe, timeout=1, limit=20)
        release.set()
        claimer_thread.join(30)
    assert not claimer_thread.is_alive()
    assert not [r for r in caplog.records if "claimer error" in r.getMessage()], caplog.text
    assert "cannot schedule new futures" not in caplog.text
    assert rows(store)[str(photo)][0] is None  # handed back, not left claimed for the lease
