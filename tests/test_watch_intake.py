"""The intake's windows of events: how long one stays open, and which events share
one transaction (watch/intake.py)."""

from __future__ import annotations

import queue
import threading
import time

from watchdog.events import FileDeletedEvent, FileMovedEvent

from imagegen import make_image
from labelsd.store import contents
from labelsd.watch.intake import Intake, gather
from labelsd.watch.settle import SettleTracker

STOP = object()


def test_a_window_closes_once_the_events_stop_not_at_its_full_length():
    """A drop (or a burst of renames, all there within a millisecond) is handed on
    as soon as no more events come: the window's length is only its bound. It
    used to stay open for all of it, the first 50 ms of every burst's wait."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(3):
        events.put(i)
    start = time.monotonic()
    assert gather(events, 1.0, 2.0, STOP) == [0, 1, 2]
    assert time.monotonic() - start < 0.5


def test_events_that_keep_coming_share_one_window_up_to_its_length():
    events: queue.SimpleQueue = queue.SimpleQueue()
    done = threading.Event()

    def steady() -> None:
        for i in range(1000):
            if done.is_set():
                return
            events.put(i)
            time.sleep(0.001)

    feeder = threading.Thread(target=steady, daemon=True)
    feeder.start()
    try:
        start = time.monotonic()
        # a quiet gap far longer than the feeder's pauses, even on a loaded machine
        window = gather(events, 1.0, 0.2, STOP, quiet_s=0.1)
        took = time.monotonic() - start
    finally:
        done.set()
        feeder.join()
    assert 0.2 <= took < 0.6, took
    assert len(window) > 20 and window == list(range(len(window)))


def test_a_window_ends_at_the_stop_marker():
    events: queue.SimpleQueue = queue.SimpleQueue()
    for item in (1, STOP, 2):
        events.put(item)
    assert gather(events, 1.0, 2.0, STOP) == [1, STOP]


def _intake(store, root, enqueued: list) -> Intake:
    def enqueue(facts) -> int:
        enqueued.append([f.path for f in facts])
        return len(facts)

    return Intake(store, roots=lambda: [str(root)], enqueue=enqueue,
                  settling=SettleTracker(), stop=threading.Event(), unreadable=lambda _: None)


def test_photos_moved_in_from_outside_are_queued_in_one_transaction(store, tmp_path):
    """`mv ~/staging/*.jpg inbox/`: one rename event per photo, one enqueue for the
    window (it was one transaction per photo)."""
    root, outside = tmp_path / "inbox", tmp_path / "staging"
    root.mkdir()
    outside.mkdir()
    names = [f"IMG_{i}.jpg" for i in range(5)]
    for name in names:
        make_image(root / name)
    enqueued: list = []
    _intake(store, root, enqueued).apply(
        [FileMovedEvent(str(outside / n), str(root / n)) for n in names])
    assert enqueued == [[str(root / n) for n in names]]


def test_a_photo_moved_in_then_deleted_in_one_window_is_queued_before_it_is_marked_gone(
        store, tmp_path, monkeypatch):
    root, outside = tmp_path / "inbox", tmp_path / "staging"
    root.mkdir()
    outside.mkdir()
    make_image(root / "a.jpg")
    make_image(root / "b.jpg")
    calls: list = []
    monkeypatch.setattr(contents, "mark_missing",
                        lambda _store, paths: calls.append(("missing", list(paths))))
    enqueued: list = []
    intake = _intake(store, root, enqueued)
    monkeypatch.setattr(intake, "_enqueue", lambda facts: calls.append(
        ("queued", [f.path for f in facts])) or len(facts))
    intake.apply([FileMovedEvent(str(outside / "a.jpg"), str(root / "a.jpg")),
                  FileMovedEvent(str(outside / "b.jpg"), str(root / "b.jpg")),
                  FileDeletedEvent(str(root / "a.jpg"))])
    assert calls == [("queued", [str(root / "a.jpg"), str(root / "b.jpg")]),
                     ("missing", [str(root / "a.jpg")])]
