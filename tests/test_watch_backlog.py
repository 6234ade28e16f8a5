"""The watcher keeps what it saw while the database does not answer (issue 15,
item 2): events of a long write lock are queued once the lock goes, without a
restart; past the memory bound, the folders of the dropped events are rescanned."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

from watchdog.events import FileClosedEvent

from imagegen import make_image
from labelsd.store import connect, workqueue
from labelsd.store.engine import open_store
from labelsd.watch.backlog import Backlog
from labelsd.watch.watcher import Watcher
from servicekit import wait_for


def test_file_events_during_a_long_write_lock_are_queued_once_it_goes(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(connect, "SQLITE_BUSY_TIMEOUT_S", 1)  # "long" = past the busy timeout
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = tmp_path / "labels.db"
    scans = lambda: [r for r in caplog.records if r.getMessage().startswith("scanned ")]  # noqa: E731
    with caplog.at_level(logging.INFO, logger="labelsd"), open_store(str(db)) as store, \
            Watcher(store, [inbox], on_enqueued=lambda: None):
        wait_for(lambda: scans(), 30, "the start-up scan")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(20):
                make_image(inbox / f"p{i:02d}.jpg", seed=i)
            wait_for(lambda: "could not record file changes" in caplog.text, 30,
                     "the intake to meet the lock")
            wait_for(lambda: "still cannot record" in caplog.text, 30, "a second try")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(lambda: workqueue.queue_depth(store) == 20, 60,
                 "the 20 files seen during the lock to be queued",
                 on_timeout=lambda: f"queued {workqueue.queue_depth(store)}\n{caplog.text[-3000:]}")
        assert "the database answers again" in caplog.text
        assert len(scans()) == 1  # kept in memory: no rescan was needed


def test_past_the_bound_the_oldest_events_become_a_rescan_of_their_roots(caplog):
    rescanned: list[str] = []
    roots = ["/photos/a", "/photos/b"]
    backlog = Backlog(lambda p: [r for r in roots if p.startswith(r + os.sep)], rescanned.append,
                      max_kept=3)
    events = [FileClosedEvent(f"/photos/{d}/{i}.jpg") for d, i in
              [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5)]]
    with caplog.at_level(logging.WARNING, logger="labelsd"):
        backlog.failed(events[:2], OSError("disk full"))
        assert backlog.pending(events[2:]) == []  # not due yet: kept behind the others
        assert len(backlog) == 3 and backlog.dropped == 2
        backlog.backoff._due = 0  # the back-off has run out
        again = backlog.pending([])
        assert [e.src_path for e in again] == [e.src_path for e in events[2:]]
        backlog.succeeded()
    assert rescanned == ["/photos/a", "/photos/b"]
    assert not backlog.waiting
    assert "more than 3 file changes wait" in caplog.text


def test_an_empty_backlog_passes_events_straight_through():
    backlog = Backlog(lambda p: [], lambda r: None)
    events = [FileClosedEvent("/x/1.jpg")]
    assert backlog.pending(events) is events
    backlog.succeeded()
    assert backlog.due_in(5.0) == 5.0 and threading.active_count() >= 1


def test_a_start_up_scan_that_meets_a_locked_database_is_tried_again(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(connect, "SQLITE_BUSY_TIMEOUT_S", 1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(5):  # there since before the service started: the scan queues them itself
        old = make_image(inbox / f"old{i}.jpg", seed=i)
        os.utime(old, (time.time() - 3600, time.time() - 3600))
    db = tmp_path / "labels.db"
    with caplog.at_level(logging.INFO, logger="labelsd"), open_store(str(db)) as store:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with Watcher(store, [inbox], on_enqueued=lambda: None):
                wait_for(lambda: "scanning" in caplog.text and "failed" in caplog.text, 30,
                         "the start-up scan to meet the lock")
                holder.execute("ROLLBACK")
                wait_for(lambda: workqueue.queue_depth(store) == 5, 60,
                         "the files found by the retried scan to be queued",
                         on_timeout=lambda: caplog.text[-3000:])
        finally:
            holder.close()


def test_a_failure_with_nothing_to_keep_is_forgotten_at_the_next_success(caplog):
    backlog = Backlog(lambda p: [], lambda r: None)
    backlog.failed([], OSError("locked"))  # the root check failed, no event in the window
    assert not backlog.waiting
    backlog.succeeded()
    assert backlog.backoff.failures == 0
    with caplog.at_level(logging.ERROR, logger="labelsd"):
        backlog.failed([FileClosedEvent("/x/1.jpg")], OSError("locked"))
    assert "could not record file changes" in caplog.text  # a new outage is an ERROR again
