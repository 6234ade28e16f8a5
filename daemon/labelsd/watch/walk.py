"""Finding image files on disk: the one folder walk (used by the watcher's
reconcile scan, its walk of a folder moved in, and `labels scan`) and the stat
of one file."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator

from labelsd.paths import is_candidate, under_root
from labelsd.records import FileFacts

log = logging.getLogger(__name__)


def regular_file_facts(path: str) -> FileFacts | None:
    """Size and mtime of a regular file (not following a symlink), or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileFacts(path, st.st_size, st.st_mtime_ns)


def walk_candidates(folder: str, roots: list[str], stop: threading.Event | None = None, *,
                    linked_files: bool = False,
                    unreadable_level: int = logging.DEBUG) -> Iterator[FileFacts]:
    """Every candidate image file under `folder` (see paths.ignore_reason), with
    its size and mtime, in name order within each folder. Hidden folders are
    not entered and symlinked folders never followed. Stops early when `stop`
    is set.

    `linked_files`: also yield a symlinked file whose target is a regular file
    inside `roots`, with the target's size and mtime (`labels scan`; the
    watcher takes no links, since no event tells it when a target changes).
    A folder below `folder` that cannot be listed is logged at
    `unreadable_level`; `folder` itself always at WARNING."""
    stack = [folder]
    while stack:
        if stop is not None and stop.is_set():
            return
        current = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            level = logging.WARNING if current == folder else unreadable_level
            log.log(level, "cannot list %s: %s", current, err.strerror or err)
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):
                        stack.append(entry.path)
                    continue
                if entry.is_symlink():
                    if not linked_files:
                        continue
                    target = os.path.realpath(entry.path)
                    if not any(under_root(target, r) for r in roots) or not os.path.isfile(target):
                        continue
                elif not entry.is_file(follow_symlinks=False):
                    continue
                if not is_candidate(entry.path, roots):
                    continue
                st = entry.stat(follow_symlinks=True)  # the target's, for a link taken above
            except OSError:
                continue  # vanished or unreadable while we looked
            yield FileFacts(entry.path, st.st_size, st.st_mtime_ns)


__all__ = ["regular_file_facts", "walk_candidates"]
