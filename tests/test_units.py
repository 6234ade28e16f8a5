"""The pure logic of the watcher and the pipeline, without threads or a service:
the settle rule, the batch ladder, the outcome log, the folder walk."""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timezone

import pytest

from labelsd.pipeline.batcher import classify_batch, fit_ladder
from labelsd.pipeline.reader import Item
from labelsd.pipeline.writer import log_outcome
from labelsd.records import Claim, Outcome, OutcomeKind, Prediction, Tally
from labelsd.store import workqueue
from labelsd.watch import settle
from labelsd.watch.settle import SettleTracker
from labelsd.watch.walk import regular_file_facts, walk_candidates


def _claim(n: int = 1, attempts: int = 0) -> Claim:
    return Claim(n, f"/photos/img{n}.jpg", datetime(2026, 1, 1, tzinfo=timezone.utc), attempts)


def _write(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


# ---------------------------------------------------------------- settle


def test_created_file_settles_after_settle_s_and_not_before(tmp_path):
    path = _write(tmp_path / "a.jpg")
    tracker = SettleTracker(settle_s=1.0)
    tracker.track(path, created=True)
    start = tracker._pending[path].stable_since
    assert tracker.take_settled(start + 0.5) == []
    [ready] = tracker.take_settled(start + 1.0)
    assert ready.path == path and ready.size == 1
    assert not tracker


def test_a_growing_file_restarts_its_wait(tmp_path):
    path = _write(tmp_path / "a.jpg")
    tracker = SettleTracker(settle_s=1.0)
    tracker.track(path, created=True)
    start = tracker._pending[path].stable_since
    _write(tmp_path / "a.jpg", b"xx")  # still being copied
    assert tracker.take_settled(start + 1.5) == []  # changed: the wait starts again now
    assert tracker.take_settled(start + 2.0) == []
    [ready] = tracker.take_settled(start + 2.5)
    assert ready.size == 2


def test_a_file_with_a_local_writer_waits_for_its_close(tmp_path):
    path = _write(tmp_path / "a.jpg")
    tracker = SettleTracker(settle_s=1.0)
    tracker.track(path, created=True)
    tracker.writer_opened(path)
    start = tracker._pending[path].stable_since
    assert tracker.take_settled(start + 10) == []  # its close event will queue it
    [ready] = tracker.take_settled(start + settle.WRITER_IDLE_S)  # unless it never comes
    assert ready.path == path


def test_modified_without_creation_waits_only_under_poll(tmp_path):
    path = _write(tmp_path / "a.jpg")
    inotify = SettleTracker(settle_s=0.0)
    inotify.track(path, created=False)
    assert len(inotify) == 0  # its close event will queue it
    polled = SettleTracker(settle_s=0.0, poll=True)
    polled.track(path, created=False)
    assert len(polled) == 1


def test_gone_files_and_forgotten_files_leave_the_tracker(tmp_path):
    a, b = _write(tmp_path / "a.jpg"), _write(tmp_path / "b.jpg")
    tracker = SettleTracker(settle_s=0.0)
    tracker.track(a, created=True)
    tracker.track(b, created=True)
    os.unlink(a)
    tracker.forget(b)
    assert tracker.take_settled(1e12) == []
    assert not tracker
    tracker.track(str(tmp_path / "never-there.jpg"), created=True)
    assert not tracker


# ---------------------------------------------------------------- fit_ladder


def _items(ready: int, final: int = 0) -> list[Item]:
    items = [Item(_claim(i)) for i in range(ready)]
    for i in range(final):
        item = Item(_claim(100 + i))
        item.final = Outcome(item.claim, OutcomeKind.VANISHED)
        items.append(item)
    return items


@pytest.mark.parametrize("wanted, ladder, now, carried", [
    (6, (1, 2, 4, 8), 4, 2),     # 6 ready: run 4, carry 2, rather than pad to 8
    (8, (1, 2, 4, 8), 8, 0),     # a rung: all go
    (3, (1, 2, 4, 8), 2, 1),
    (1, (1, 2, 4, 8), 1, 0),
    (5, None, 5, 0),             # no ladder (GPU without fixed shapes): all go
    (5, (), 5, 0),
])
def test_fit_ladder_runs_the_largest_full_rung(wanted, ladder, now, carried):
    keep, carry = fit_ladder(_items(wanted), wanted, ladder)
    assert (len(keep), len(carry)) == (now, carried)
    assert all(item.final is None for item in carry)


def test_fit_ladder_always_sends_items_with_a_final_outcome():
    items = _items(3, final=2)  # two need no forward
    keep, carry = fit_ladder(items, 3, (1, 2, 4, 8))
    assert sum(item.final is not None for item in keep) == 2
    assert sum(item.final is None for item in keep) == 2 and len(carry) == 1


class _FailingModel:
    name = "broken-model"

    def classify(self, batch):
        raise MemoryError("out of memory")


def test_a_failed_forward_gives_every_image_of_the_batch_a_typed_retry():
    import numpy as np

    items = _items(2)
    for i, item in enumerate(items):
        item.sha256, item.pixels = f"{i:064x}", np.zeros((1, 1, 3), np.float32)
    follower = Item(_claim(50))
    items[0].followers.append(follower)
    outcomes, known, rows = classify_batch(_FailingModel(), items)
    assert (known, rows) == ({}, 0)
    assert [o.claim.id for o in outcomes] == [0, 50, 1]
    assert all(o.kind is OutcomeKind.RETRY and "out of memory" in o.error for o in outcomes)


# ---------------------------------------------------------------- log_outcome


@pytest.mark.parametrize("kind, attempts, counter, words", [
    (OutcomeKind.CLASSIFIED, 0, Tally.DONE, "labeled img1.jpg: tabby 0.90"),
    (OutcomeKind.LINKED, 0, Tally.LINKED, "same content"),
    (OutcomeKind.BAD_IMAGE, 0, Tally.FAILED, "failed img1.jpg: not an image"),
    (OutcomeKind.VANISHED, 0, Tally.VANISHED, "vanished img1.jpg"),
    (OutcomeKind.RETRY, 0, Tally.RETRIED, "will retry img1.jpg"),
    (OutcomeKind.RETRY, workqueue.MAX_ATTEMPTS - 1, Tally.FAILED, "failed img1.jpg"),
])
def test_log_outcome_counts_and_says_what_happened(caplog, kind, attempts, counter, words):
    predictions = [Prediction(1, "tabby", "n02123045", 281, 0.9)] if kind is OutcomeKind.CLASSIFIED else []
    error = "not an image" if kind in (OutcomeKind.BAD_IMAGE, OutcomeKind.RETRY) else None
    outcome = Outcome(_claim(1, attempts), kind, error=error, predictions=predictions)
    with caplog.at_level(logging.INFO, logger="labelsd.pipeline.writer"):
        assert log_outcome(outcome) == counter
    assert words in caplog.text


# ---------------------------------------------------------------- walk


def test_walk_finds_candidates_in_name_order_and_skips_the_rest(tmp_path):
    root = tmp_path / "root"
    for name in ["b.jpg", "a.png", "sub/c.JPEG", ".hidden/d.jpg", "sub/.e.jpg",
                 "notes.txt", "f.jpg.part", "sub/deeper/g.webp"]:
        _write(root / name)
    os.symlink(root / "a.png", root / "link.jpg")
    os.symlink(root / "sub", root / "linked-folder")
    found = [os.path.relpath(f.path, root) for f in walk_candidates(str(root), [str(root)])]
    assert sorted(found) == ["a.png", "b.jpg", "sub/c.JPEG", "sub/deeper/g.webp"]
    assert found.index("a.png") < found.index("b.jpg")


def test_walk_takes_links_inside_the_roots_only_when_asked(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _write(root / "a.png", b"12345")
    _write(outside / "secret.jpg")
    os.symlink(root / "a.png", root / "inside-link.jpg")
    os.symlink(outside / "secret.jpg", root / "outside-link.jpg")
    facts = {os.path.basename(f.path): f for f in
             walk_candidates(str(root), [str(root)], linked_files=True)}
    assert set(facts) == {"a.png", "inside-link.jpg"}
    assert facts["inside-link.jpg"].size == 5  # the target's size


def test_walk_stops_when_asked(tmp_path):
    for i in range(5):
        _write(tmp_path / f"{i}" / "a.jpg")
    stop = threading.Event()
    stop.set()
    assert list(walk_candidates(str(tmp_path), [str(tmp_path)], stop)) == []


def test_a_missing_root_yields_nothing_and_an_unreadable_folder_is_said_once(tmp_path, caplog):
    from labelsd.watch import walk

    assert list(walk_candidates(str(tmp_path / "gone"), [str(tmp_path / "gone")])) == []
    denied = PermissionError(13, "Permission denied")
    folder = str(tmp_path / "locked")
    with caplog.at_level(logging.WARNING, logger="labelsd.watch.walk"):
        walk.report_unreadable(folder, denied)
        walk.report_unreadable(folder, denied)
    assert caplog.text.count("cannot read folder") == 1
    walk._reported_folders.discard(folder)


def test_regular_file_facts_is_none_for_anything_but_a_regular_file(tmp_path):
    path = _write(tmp_path / "a.jpg", b"abc")
    facts = regular_file_facts(path)
    assert (facts.size, facts.mtime_ns) == (3, os.stat(path).st_mtime_ns)
    os.symlink(path, tmp_path / "link.jpg")
    os.mkfifo(tmp_path / "fifo.jpg")
    assert regular_file_facts(str(tmp_path / "link.jpg")) is None
    assert regular_file_facts(str(tmp_path / "fifo.jpg")) is None
    assert regular_file_facts(str(tmp_path)) is None
    assert regular_file_facts(str(tmp_path / "nope.jpg")) is None
