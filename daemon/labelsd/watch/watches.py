"""Which observer watches each root: inotify where it can, polling where it must.

One `Watches` owns watchdog's observers (one inotify, one polling, each started
when first needed) and the watch on every root. Besides scheduling, it keeps
two promises that watchdog does not:

- The inotify watch limit. watchdog raises when the root itself cannot be
  watched, but skips a subfolder it cannot watch without a word, at start and
  whenever a folder appears later. After watching a root, and when folders
  appear (`poll_if_full`), one spare watch is probed for
  (watchlimit.inotify_has_room); with none left the root is polled instead.
- Polling a big tree costs. A polled root is snapshotted (every file
  stat()ed) at most every POLL_INTERVAL_S, but never more often than
  POLL_PACE times as long as its last snapshot took, so a share of 100,000
  photos costs a tenth of a core at most instead of all of it.
- The folder under the watch. A watch follows the folder it was put on: once
  the root is deleted, moved away or unmounted, or a new folder (or a file
  system mounted on it, like a NAS share that came up late) stands at its
  path, the watch hears nothing more. `check` compares the root's (device,
  inode) with the one the watch was put on, drops a watch whose folder is
  gone, and watches anew the folder that is there.

- A watch that cannot be kept. watchdog walks a tree recursively, so a
  tree about 1,000 folders deep raises RecursionError when it is watched (at
  start, or in the observer's thread when such a tree is moved in, which then
  dies without a word); polling snapshots recurse the same way. Such a root,
  and any root whose observer thread died (`healthy`), is said at WARNING and
  rescanned every RESCAN_S instead (the watcher's reconcile walk has no
  recursion), the other roots keep their watches.

Every method is safe from any thread: one lock serialises them, so a reload,
the intake thread and a scan never schedule the same root twice.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.events import FileSystemEventHandler
from watchdog.observers.api import BaseObserver

from labelsd.errors import LabelsError
from labelsd.paths import shown
from labelsd.watch.observers import (
    POLL_INTERVAL_S,
    paced_polling_observer,
)
from labelsd.watch.watchlimit import WATCH_LIMIT_ERRNOS, inotify_has_room, limit_warning

log = logging.getLogger(__name__)

RESCAN_S = 30.0  # a root no observer can watch is rescanned this often (paced the same way)

RESCANNED = "rescanned"  # stands for the observer of a root that is rescanned instead

# What `Watches.check` found: the same folder; the folder is gone but may come
# back as it was (EIO, EACCES: nothing to mark missing); the folder is gone
# (deleted, moved away, unmounted: its files are missing); a new watch is on
# the folder now there (rescan it).
UNCHANGED, UNREACHABLE, VANISHED, REWATCHED = "unchanged", "unreachable", "vanished", "rewatched"


@dataclass(frozen=True)
class Absent:
    """A root that is not there as a folder: why, and whether it is gone for good
    (deleted, moved away, unmounted) rather than unreachable for now."""

    reason: str
    vanished: bool


def folder_identity(path: str) -> tuple[int, int] | Absent:
    """(device, inode) of the folder at `path`: a new pair means a new folder there
    (deleted and made again, or a file system mounted on it)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as err:
        return Absent(err.strerror or "not found", vanished=True)
    except OSError as err:
        return Absent(err.strerror or str(err), vanished=False)
    if not stat.S_ISDIR(st.st_mode):
        return Absent("not a folder", vanished=True)
    return (st.st_dev, st.st_ino)


class Watches:
    """The observers and each root's watch. `stop()` is idempotent and joins them."""

    def __init__(self, handler: FileSystemEventHandler, event_types: list, *, poll: bool,
                 inotify_factory: Callable[[], object],
                 watch_room: Callable[[str], bool] = inotify_has_room):
        self._handler = handler
        self._event_types = event_types
        self._poll = poll
        self._inotify_factory = inotify_factory
        self._watch_room = watch_room  # False once the inotify watch limit is reached
        self._inotify = None
        self._polling: BaseObserver | None = None
        self._scheduled: dict[str, tuple[object, object]] = {}  # none while a root is absent
        self._identity: dict[str, tuple[int, int] | Absent] = {}  # the folder each watch is on
        self._lock = threading.RLock()
        self._stopped = False

    def add(self, root: str) -> None:
        """Watch `root` (a folder) recursively. Raises LabelsError when it cannot be."""
        with self._lock:
            identity = folder_identity(root)  # before the watch: a change after it shows
            self._scheduled[root] = self._schedule(root)
            self._identity[root] = identity

    def remove(self, root: str) -> None:
        with self._lock:
            self._identity.pop(root, None)
            self._drop(root)

    def poll_if_full(self, root: str) -> bool:
        """Folders appeared under `root`: True when inotify had no watch left for
        them (watchdog says nothing), and the root is now polled instead."""
        with self._lock:
            scheduled = self._scheduled.get(root)
            if self._stopped or scheduled is None or scheduled[0] is not self._inotify:
                return False
            if self._watch_room(root):
                return False
            log.warning("%s", limit_warning(root, "no watch left for a new subfolder"))
            self._drop(root)
            self._scheduled[root] = self._schedule_polling(root)
            return True

    def check(self, root: str) -> str:
        """Whether `root` is still the folder its watch is on (see the constants)."""
        with self._lock:
            if self._stopped or root not in self._identity:
                return UNCHANGED
            now, was = folder_identity(root), self._identity[root]
            if now == was:
                return UNCHANGED
            self._drop(root)
            self._identity[root] = now
            if isinstance(now, Absent):
                if not isinstance(was, Absent):
                    log.warning("watched folder %s is gone (%s): its photos show as missing "
                                "until it is back, and labelsd watches for that", shown(root), now.reason)
                return VANISHED if now.vanished else UNREACHABLE
            try:
                self._scheduled[root] = self._schedule(root)
            except LabelsError as err:
                log.warning("%s; trying again later", err)
                self._identity[root] = Absent(str(err), vanished=False)
                return UNREACHABLE
            how = "is back" if isinstance(was, Absent) else "is a new folder (made again, or mounted on)"
            log.info("watched folder %s %s: watching it again and rescanning it", shown(root), how)
            return REWATCHED

    def healthy(self, root: str) -> bool:
        """False when the thread watching `root` died (a RecursionError in
        watchdog on a very deep tree, any other bug): then the root is said at
        WARNING and rescanned from now on (`rescanned`)."""
        with self._lock:
            scheduled = self._scheduled.get(root)
            if self._stopped or scheduled is None or scheduled[0] == RESCANNED:
                return True
            observer, watch = scheduled
            if _watch_alive(observer, watch):
                return True
            self._drop(root)
            if observer is self._inotify:  # polling next, unless that dies too
                log.warning("the inotify watch on %s stopped (its thread died, see the error "
                            "above); polling %s instead", shown(root), shown(root))
                self._scheduled[root] = self._schedule_polling(root)
            else:
                log.warning("the watch on %s stopped (its thread died, see the error above); "
                            "rescanning %s every %.0fs instead", shown(root), shown(root), RESCAN_S)
                self._scheduled[root] = (RESCANNED, None)
            return False

    def rescanned(self) -> list[str]:
        """The roots no observer watches, which the watcher rescans instead."""
        with self._lock:
            return [r for r, (observer, _) in self._scheduled.items() if observer == RESCANNED]

    def rewatch(self, root: str) -> None:
        """Watch `root` anew (a subfolder became readable: watchdog skipped it)."""
        with self._lock:
            if self._stopped or root not in self._scheduled:
                return
            if self._scheduled[root][0] in (RESCANNED, self._polling):
                return  # a rescan or the next snapshot sees the folder anyway
            self._drop(root)
            try:
                self._scheduled[root] = self._schedule(root)
            except LabelsError as err:
                log.warning("%s; rescanning it every %.0fs instead", err, RESCAN_S)
                self._scheduled[root] = (RESCANNED, None)

    def absent(self) -> dict[str, str]:
        """The roots not there as a folder now, with why. Without the lock: the
        heartbeat asks, and must not wait while a big tree is being watched."""
        seen = list(self._identity.items())  # one step under the GIL: a consistent copy
        return {root: what.reason for root, what in seen if isinstance(what, Absent)}

    def stop(self, timeout: float) -> None:
        with self._lock:
            self._stopped = True
            observers = [o for o in (self._inotify, self._polling) if o is not None]
        for observer in observers:
            observer.stop()
        for observer in observers:
            if observer.is_alive():
                observer.join(timeout)

    # ------------------------------------------------------------------ helpers

    def _drop(self, root: str) -> None:
        scheduled = self._scheduled.pop(root, None)
        if scheduled is not None and scheduled[0] != RESCANNED:
            _unschedule(*scheduled, root)

    @staticmethod
    def _unschedule_path(observer, root: str) -> None:
        """Undo a schedule() that raised half-way: its emitter may be left running."""
        for watch in [w for w in observer.emitters if w.watch.path == root]:
            _unschedule(observer, watch.watch, root)

    def _schedule(self, root: str) -> tuple[object, object]:
        if not self._poll:
            try:
                if self._inotify is None:
                    observer = self._inotify_factory()
                    observer.start()
                    self._inotify = observer
                watch = self._inotify.schedule(self._handler, root, recursive=True,
                                               event_filter=self._event_types,
                                               follow_symlink=False)
            except RecursionError:
                self._unschedule_path(self._inotify, root)
                log.warning("cannot watch %s: its folder tree is too deep for watchdog (it "
                            "recurses once per level); rescanning %s every %.0fs instead",
                            shown(root), shown(root), RESCAN_S)
                return RESCANNED, None
            except OSError as err:
                if err.errno not in WATCH_LIMIT_ERRNOS:
                    raise LabelsError(f"cannot watch {root}: {err.strerror}") from err
                log.warning("%s", limit_warning(root, err.strerror))
            else:
                # watchdog skips a subfolder it cannot watch without a word: with
                # no room left after the root, some may have been skipped.
                if self._watch_room(root):
                    log.info("watching %s", shown(root))
                    return self._inotify, watch
                _unschedule(self._inotify, watch, root)
                log.warning("%s", limit_warning(root, "no watch left for its subfolders"))
        return self._schedule_polling(root)

    def _schedule_polling(self, root: str) -> tuple[object, object]:
        if self._polling is None:
            self._polling = paced_polling_observer()
            self._polling.start()
        try:
            watch = self._polling.schedule(self._handler, root, recursive=True,
                                           event_filter=self._event_types)
        except RecursionError:  # its first snapshot recurses once per level too
            self._unschedule_path(self._polling, root)
            log.warning("cannot poll %s either: its folder tree is too deep for watchdog; "
                        "rescanning %s every %.0fs instead", shown(root), shown(root), RESCAN_S)
            return RESCANNED, None
        log.info("watching %s (polling every %.0fs, or less often if a pass takes long)",
                 shown(root), POLL_INTERVAL_S)
        return self._polling, watch


def _watch_alive(observer, watch) -> bool:
    """The observer's dispatch thread and the watch's emitter (with its inotify
    reader, when it has one) are all running."""
    if not isinstance(observer, BaseObserver):
        return True  # a stand-in (tests): nothing to tell
    if not observer.is_alive():
        return False
    emitter = getattr(observer, "_emitter_for_watch", {}).get(watch)
    if emitter is None:
        return True
    # inotify: one reader thread (InotifyFD) shared by every watch of the process
    reader = getattr(emitter, "_inotify_fd", None)
    return emitter.is_alive() and (reader is None or reader.is_alive())


def _unschedule(observer, watch, root: str) -> None:
    try:
        observer.unschedule(watch)
    except (KeyError, OSError) as err:  # its emitter already stopped with its folder
        log.debug("unscheduling %s: %s", shown(root), err)
