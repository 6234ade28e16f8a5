"""Finding image files on disk: the one folder walk (used by the watcher's
reconcile scan, its walk of a folder moved in, and `labels scan`) and the stat
of one file."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator

from labelsd.paths import NOT_UTF8, ignore_reason, is_candidate, is_text, shown, under_root
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
                    unreadable: set[str] | None = None) -> Iterator[FileFacts]:
    """Every candidate image file under `folder` (see paths.ignore_reason), with
    its size and mtime, in name order within each folder. Hidden folders are
    not entered and symlinked folders never followed. Stops early when `stop`
    is set.

    `linked_files`: also yield a symlinked file whose target is a regular file
    inside `roots`, with the target's size and mtime (`labels scan`; the
    watcher takes no links, since no event tells it when a target changes).
    A folder that cannot be listed is said at WARNING once (report_unreadable)
    and added to `unreadable`, so the watcher can pick it up once it is
    readable. An image whose name is not UTF-8 is said at WARNING once and
    skipped: the rest of its folder is walked as usual."""
    stack = [folder]
    while stack:
        if stop is not None and stop.is_set():
            return
        current = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            if not isinstance(err, (FileNotFoundError, NotADirectoryError)):
                report_unreadable(current, err)
                if unreadable is not None:
                    unreadable.add(current)
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
                    if not is_text(entry.path):
                        report_untracked_name(entry.path, roots)
                    continue
                st = entry.stat(follow_symlinks=True)  # the target's, for a link taken above
            except OSError:
                continue  # vanished or unreadable while we looked
            yield FileFacts(entry.path, st.st_size, st.st_mtime_ns)


# What was said once per process, so a rescan every few seconds (a polled or
# rescanned root) does not repeat it. Bounded: a share with a million odd names
# logs its first REPORT_LIMIT.
REPORT_LIMIT = 10_000
_reported_names: set[str] = set()
_reported_folders: set[str] = set()


def report_untracked_name(path: str, roots: list[str]) -> None:
    """An image by name that cannot be tracked because of its name: say so once."""
    if path in _reported_names or len(_reported_names) >= REPORT_LIMIT:
        return
    if ignore_reason(path, roots) != NOT_UTF8:
        return  # hidden, a partial download ...: skipped quietly, as always
    _reported_names.add(path)
    log.warning("not tracking %s: %s", shown(path), NOT_UTF8)


def report_unreadable(folder: str, err: OSError) -> None:
    """A folder that cannot be listed: said once, until it is readable again."""
    if folder in _reported_folders or len(_reported_folders) >= REPORT_LIMIT:
        return
    _reported_folders.add(folder)
    log.warning("cannot read folder %s (%s): its photos are not tracked until it is "
                "readable; labelsd checks every few seconds", shown(folder),
                err.strerror or err)


def readable_again(folder: str) -> bool:
    """True once a folder reported unreadable can be listed (then it would be
    reported again should it become unreadable once more)."""
    try:
        with os.scandir(folder):
            pass
    except OSError:
        return False
    _reported_folders.discard(folder)
    return True


class UnreadableFolders:
    """Folders that could not be listed, waiting to become readable (chmod,
    setfacl). Noted by the walks (any thread), checked on the intake thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: set[str] = set()

    def note(self, folders: set[str]) -> None:
        with self._lock:
            self._folders |= folders

    def take_readable(self) -> list[str]:
        """The noted folders that can be listed now; they are no longer waiting."""
        with self._lock:
            waiting = list(self._folders)
        readable = [f for f in waiting if readable_again(f)]
        with self._lock:
            self._folders -= set(readable)
        return readable


__all__ = ["UnreadableFolders", "readable_again", "regular_file_facts", "report_unreadable",
           "report_untracked_name", "walk_candidates"]
