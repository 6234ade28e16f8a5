"""Hostile folder contents against the real Watcher and real inotify (issue 14):
names that are not UTF-8, trees deeper than watchdog can recurse, an observer
thread that dies. Each checks that the ordinary photos around the odd thing
are still queued, and that the odd thing is said once at WARNING."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from imagegen import make_image
from labelsd.store.schema import QueueItem
from labelsd.watch import reconcile as reconcile_mod
from labelsd.watch.watcher import Watcher
from servicekit import wait_for

DEADLINE_S = 60
DEPTH = 1000  # deeper than Python's recursion limit: watchdog's os.walk recursion fails


def queued(store) -> set[str]:
    with store.read() as session:
        return set(session.scalars(select(QueueItem.path)))


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def make_deep_tree(top: Path, depth: int = DEPTH) -> Path:
    """`top/d/d/.../d` (`depth` folders), made without long paths; returns the deepest."""
    top.mkdir()
    here = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=here)
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
            os.close(here)
            here = below
    finally:
        os.close(here)
    return top.joinpath(*["d"] * depth)


_lifted = itertools.count()


def remove_tree(top: Path) -> None:
    """Remove a tree of any depth: shutil.rmtree (and pytest's tmp_path clean-up,
    which then fails every later session on this machine) recurse once per level.
    Each pass lifts one folder's first subfolder up a level, then removes it."""
    top = str(top)
    while os.path.lexists(top):
        entries = os.listdir(top)
        folders = [e for e in entries if os.path.isdir(os.path.join(top, e))
                   and not os.path.islink(os.path.join(top, e))]
        for e in set(entries) - set(folders):
            os.unlink(os.path.join(top, e))
        if not folders:
            os.rmdir(top)
            continue
        child = os.path.join(top, folders[0])
        below = [e for e in os.listdir(child) if os.path.isdir(os.path.join(child, e))
                 and not os.path.islink(os.path.join(child, e))]
        for e in set(os.listdir(child)) - set(below):
            os.unlink(os.path.join(child, e))
        for e in below:
            os.rename(os.path.join(child, e), os.path.join(top, f".lifted-{next(_lifted)}"))
        os.rmdir(child)


@pytest.fixture
def deep_trees(tmp_path):
    """`make(top)` makes a deep tree; afterwards every folder in tmp_path (where
    the trees were made or moved) is removed without recursion."""
    yield make_deep_tree
    for folder in [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]:
        remove_tree(folder)


def test_latin1_name_at_start_costs_no_other_photo(store, tmp_path, caplog):
    root = tmp_path / "inbox"
    root.mkdir()
    photos = [make_image(root / f"p{i:02}.jpg", seed=i) for i in range(20)]
    odd = os.path.join(os.fsencode(root), b"caf\xe9.jpg")
    Path(os.fsdecode(odd)).write_bytes(photos[0].read_bytes())
    caplog.set_level(logging.INFO, logger="labelsd")
    with Watcher(store, [str(root)], on_enqueued=lambda: None, settle_s=0.2):
        wait_for(lambda: queued(store) >= {str(p) for p in photos}, DEADLINE_S,
                 "the 20 ordinary photos to be queued")
    said = [w for w in warnings(caplog) if "caf\\xe9.jpg" in w]
    assert len(said) == 1 and "not valid UTF-8" in said[0], warnings(caplog)


def test_latin1_name_in_an_event_window_costs_no_other_photo(store, tmp_path, caplog):
    root = tmp_path / "inbox"
    root.mkdir()
    caplog.set_level(logging.INFO, logger="labelsd")
    with Watcher(store, [str(root)], on_enqueued=lambda: None, settle_s=0.2) as watcher:
        wait_for(lambda: watcher.roots, DEADLINE_S, "the watch")
        odd = Path(os.fsdecode(os.path.join(os.fsencode(root), b"caf\xe9.jpg")))
        photos = []
        for i in range(3):  # one burst: the odd name between ordinary ones
            photos.append(make_image(root / f"a{i}.jpg", seed=i))
            if i == 1:
                make_image(odd, seed=9)
        wait_for(lambda: queued(store) >= {str(p) for p in photos}, DEADLINE_S,
                 "the ordinary photos of the same burst to be queued")
    assert any("caf\\xe9.jpg" in w for w in warnings(caplog)), warnings(caplog)


def test_deep_tree_at_start_is_rescanned_not_fatal(store, tmp_path, caplog, monkeypatch,
                                                  deep_trees):
    monkeypatch.setattr(reconcile_mod, "RESCAN_S", 1.0)
    root = tmp_path / "inbox"
    root.mkdir()
    deepest = deep_trees(root / "deep")
    first = make_image(root / "first.jpg", seed=1)
    caplog.set_level(logging.INFO, logger="labelsd")
    with Watcher(store, [str(root)], on_enqueued=lambda: None, settle_s=0.2,
                 root_check_s=0.5) as watcher:
        wait_for(lambda: str(first) in queued(store), DEADLINE_S, "the photo there at start")
        later = make_image(root / "later.jpg", seed=2)
        below = make_image(deepest / "below.jpg", seed=3)
        wait_for(lambda: {str(later), str(below)} <= queued(store), DEADLINE_S,
                 "photos added later, one at the bottom of the deep tree")
        assert watcher.roots == [str(root)]
    said = [w for w in warnings(caplog) if "too deep" in w]
    assert len(said) == 1 and "rescanning" in said[0], warnings(caplog)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # watchdog's
def test_deep_tree_moved_in_is_noticed_and_the_root_rescanned(store, tmp_path, caplog,
                                                               monkeypatch, deep_trees):
    monkeypatch.setattr(reconcile_mod, "RESCAN_S", 1.0)
    root, other = tmp_path / "inbox", tmp_path / "other"
    root.mkdir()
    other.mkdir()
    deep_trees(tmp_path / "deep")
    caplog.set_level(logging.INFO, logger="labelsd")
    with Watcher(store, [str(root), str(other)], on_enqueued=lambda: None, settle_s=0.2,
                 root_check_s=0.5):
        first = make_image(root / "first.jpg", seed=1)
        wait_for(lambda: str(first) in queued(store), DEADLINE_S, "a photo before")
        os.rename(tmp_path / "deep", root / "deep")
        after = make_image(root / "after.jpg", seed=2)
        elsewhere = make_image(other / "elsewhere.jpg", seed=3)
        wait_for(lambda: {str(after), str(elsewhere)} <= queued(store), DEADLINE_S,
                 "photos after it, in that root and in another")
    assert any("stopped" in w for w in warnings(caplog)), warnings(caplog)


@pytest.fixture(autouse=True)
def _reset_reports(monkeypatch):
    """What was said once is said once per test."""
    from labelsd.watch import walk

    monkeypatch.setattr(walk, "_reported_names", set(), raising=False)
    monkeypatch.setattr(walk, "_reported_folders", set(), raising=False)
