"""The intake: one window of filesystem events turned into database changes.

New or changed files go into the queue (through the watcher's `enqueue`),
renames into `contents.move_path`, deletions into `contents.mark_missing`. A
file is queued only once it is complete: closed after writing (inotify
IN_CLOSE_WRITE), or moved into the tree (a rename is atomic, so the bytes are
all there). A bare creation without a close waits in the settle tracker
(settle.py) until its size and mtime stop changing.

One odd event never costs the others of its window: each is applied on its
own, and a path that cannot be tracked (a name that is not UTF-8) is said once
and left out.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from labelsd.errors import LabelsError
from labelsd.paths import canonical_path, is_candidate, is_text, shown, under_root
from labelsd.records import FileFacts
from labelsd.store import contents
from labelsd.store.engine import Store
from labelsd.watch.reconcile import ExistingPaths
from labelsd.watch.settle import SettleTracker
from labelsd.watch.walk import regular_file_facts, report_untracked_name, walk_candidates

log = logging.getLogger(__name__)

EVENT_TYPES = [FileClosedEvent, FileCreatedEvent, FileOpenedEvent, FileModifiedEvent,
               FileMovedEvent, FileDeletedEvent, DirCreatedEvent, DirMovedEvent, DirDeletedEvent]


@dataclass(frozen=True)
class SettleRequest:
    """From a scan to the intake: watch this file settle before queueing it."""

    path: str


class OverflowAlarm(logging.Filter):
    """watchdog reports a kernel inotify queue overflow (events lost) only in its
    log; this filter on that logger turns the report into a rescan of every root."""

    def __init__(self, on_overflow: Callable[[], None]):
        super().__init__()
        self.on_overflow = on_overflow

    def filter(self, record: logging.LogRecord) -> bool:
        if "queue overflowed" in record.getMessage():
            self.on_overflow()
        return True


class Handler(FileSystemEventHandler):
    """Runs on watchdog's thread: must stay cheap, so it only hands events over."""

    def __init__(self, events: queue_mod.SimpleQueue):
        self._events = events

    def dispatch(self, event: FileSystemEvent) -> None:
        self._events.put(event)


# A window closes once no event came for this long: a burst of renames (or a copy
# tool's stream of closes) arrives within a millisecond or two of each other, so its
# events still share a window, and a lone drop or the burst's start waits 5 ms, not
# the window's whole length (50 ms, the first 5% of a 32-photo burst at int8 speed).
QUIET_S = 0.005


def gather(events: queue_mod.SimpleQueue, timeout: float, window_s: float, stop,
           quiet_s: float = QUIET_S) -> list:
    """One window of events: the first within `timeout`, then more until none came
    for `quiet_s` or `window_s` after the first (at most 10,000), ending early at
    the `stop` marker."""
    try:
        batch = [events.get(timeout=timeout)]
    except queue_mod.Empty:
        return []
    deadline = time.monotonic() + window_s
    while batch[-1] is not stop and len(batch) < 10_000:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            batch.append(events.get(timeout=min(left, quiet_s)))
        except queue_mod.Empty:
            break
    return batch


class Intake:
    """Applies windows of events; used by the watcher's intake thread only.
    `roots()` gives the watched roots now, `enqueue` queues files (and wakes the
    pipeline), `unreadable` collects folders a walk could not list."""

    def __init__(self, store: Store, *, roots: Callable[[], list[str]],
                 enqueue: Callable[[list[FileFacts]], int], settling: SettleTracker,
                 stop: threading.Event, unreadable: Callable[[set[str]], None]):
        self.store = store
        self.roots = roots
        self._enqueue = enqueue
        self.settling = settling
        self._stop = stop
        self._unreadable = unreadable

    def apply(self, events: list[FileSystemEvent | SettleRequest]) -> set[str]:
        """Apply a window of events in order; consecutive enqueues share one
        transaction. Returns the roots that have new folders (each needs a watch)."""
        complete: dict[str, None] = {}  # paths to queue now, in arrival order
        grown: set[str] = set()

        def flush() -> None:
            if complete:
                facts = [f for f in map(regular_file_facts, complete) if f is not None]
                complete.clear()
                self._enqueue(facts)

        for event in events:
            try:
                self._apply_one(event, complete, grown, flush)
            except LabelsError:
                raise  # database trouble: the caller says so once for the window
            except Exception:  # noqa: BLE001 - one odd event must not lose the others
                log.exception("cannot handle %s; the other events go on", _describe(event))
        flush()
        return grown

    def _apply_one(self, event, complete: dict[str, None], grown: set[str],
                   flush: Callable[[], None]) -> None:
        if isinstance(event, SettleRequest):
            self.settling.track(event.path, created=True)
            return
        src = self._path(event.src_path)
        dest = self._path(getattr(event, "dest_path", "") or "")
        if isinstance(event, FileClosedEvent):
            self.settling.forget(src)
            if self.tracked(src):
                complete[src] = None
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            if event.is_synthetic:
                return  # in a new folder: the DirCreatedEvent/DirMovedEvent walk has it
            if self.tracked(src):
                self.settling.track(src, created=isinstance(event, FileCreatedEvent))
        elif isinstance(event, FileOpenedEvent):
            self.settling.writer_opened(src)
        elif isinstance(event, FileMovedEvent):
            self.settling.forget(src)
            if not (src and self.tracked(src, quiet=True)):
                # moved in from outside (or from a name we ignore): a new complete
                # file, queued with the rest of the window
                if dest and self.tracked(dest):
                    complete[dest] = None
                return
            flush()
            self._moved(src, dest)
        elif isinstance(event, FileDeletedEvent):
            self.settling.forget(src)
            if self.tracked(src, quiet=True):
                flush()
                contents.mark_missing(self.store, [src])
        elif isinstance(event, DirMovedEvent):
            flush()
            if src and not dest:  # moved out of the tree
                self.forget_folder(src)
            elif dest and not src:  # moved in: inotify reports nothing for its files
                grown.update(self._roots_of(dest))
                for facts in self._walk(dest):
                    complete[facts.path] = None
        elif isinstance(event, DirCreatedEvent):
            # A file written and closed in a new folder before watchdog had
            # added the folder's watch sent no close event (`mkdir d; cp x d/`
            # under load): whatever the folder holds by now settles from here.
            # One still being written is closed later, and that close queues it.
            grown.update(self._roots_of(src))
            for facts in self._walk(src):
                self.settling.track(facts.path, created=True)
        elif isinstance(event, DirDeletedEvent):
            flush()
            self.forget_folder(src)

    def _walk(self, folder: str):
        unreadable: set[str] = set()
        yield from walk_candidates(folder, self.roots(), self._stop, unreadable=unreadable)
        if unreadable:
            self._unreadable(unreadable)

    def _moved(self, src: str, dest: str) -> None:
        """A tracked file renamed (one moved in from outside is a new file: `_apply_one`)."""
        if dest and self.tracked(dest):
            if not contents.move_path(self.store, src, dest, regular_file_facts(dest)):
                # src had no content yet (queued, maybe being read right now): it is
                # gone, and dest is read as a new file.
                contents.mark_missing(self.store, [src])
                self._enqueue([f for f in [regular_file_facts(dest)] if f])
        else:  # moved out, or renamed to a name we ignore
            contents.mark_missing(self.store, [src])

    def forget_folder(self, folder: str) -> None:
        if not is_text(folder):
            return  # nothing under a folder whose name is not UTF-8 was ever tracked
        missing = contents.mark_missing_under(self.store, folder, ExistingPaths())
        if missing:
            log.info("%d tracked file(s) under %s are gone", missing, shown(folder))

    def tracked(self, path: str, *, quiet: bool = False) -> bool:
        """A candidate image under one of the roots (symlinked folders resolved,
        so nothing outside a root is ever recorded). One that cannot be tracked
        for its name is said once, unless `quiet` (it is going away)."""
        roots = self.roots()
        if is_candidate(path, roots):
            return True
        if not quiet and not is_text(path):
            report_untracked_name(path, roots)
        return False

    def _roots_of(self, path: str) -> list[str]:
        return [r for r in self.roots() if under_root(path, r)]

    @staticmethod
    def _path(raw) -> str:
        if not raw:
            return ""
        return canonical_path(os.fsdecode(raw))


def _describe(event) -> str:
    path = getattr(event, "src_path", None) or getattr(event, "path", "")
    return f"{type(event).__name__} {shown(os.fsdecode(path))}"


__all__ = ["EVENT_TYPES", "Handler", "Intake", "OverflowAlarm", "SettleRequest", "gather"]
