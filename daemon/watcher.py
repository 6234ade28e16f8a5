"""Watching folders: filesystem events in, durable queue rows out.

The watchdog callbacks only put events on an in-memory queue. One intake thread
takes them off in small windows (~50 ms) and turns each window into a few
database transactions: new or changed files into the queue (`queue.enqueue`,
then `on_enqueued()` wakes the pipeline), renames into `queue.move_path`,
deletions into `queue.mark_missing`.

A file is queued only once it is complete:

- closed after writing (inotify IN_CLOSE_WRITE), or moved into the tree (a
  rename is atomic, so the bytes are all there);
- a bare creation without a close (a hard link, a file copied in by another
  machine on a share, every file under --poll) waits in the settle tracker until
  its size and mtime stopped changing for `settle_s`. A file that was opened
  after its creation has a local writer, whose close will come; the tracker
  then waits for that close (and falls back to stability after WRITER_IDLE_S).

At start, and for every root added by a reload, a reconcile scan walks the
root (no symlinks followed), queues new or changed files (enqueue skips
unchanged ones by size and mtime without reading them) and marks tracked files
that are gone as missing. The watch is set up before the scan, so a file that
lands during the scan is seen by one or the other (or both, harmlessly).
"""

from __future__ import annotations

import errno
import logging
import os
import queue as queue_mod
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import select
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
from watchdog.observers.polling import PollingObserver

from . import queue
from .errors import LabelsError
from .paths import is_candidate
from .queue import FileFacts
from .store import Store, canonical_path

log = logging.getLogger(__name__)

WINDOW_S = 0.05  # how long the intake gathers events into one transaction
SETTLE_S = 1.0  # a file with no writer must keep its size and mtime this long
WRITER_IDLE_S = 60.0  # a file whose writer never closes it is taken once stable this long
IDLE_WAIT_S = 5.0  # intake wake-up when nothing is pending (stop() wakes it at once)
POLL_INTERVAL_S = 1.0  # --poll: how often each root is rescanned
SCAN_CHUNK = 500  # files per enqueue transaction in a scan
WATCH_LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE)

EVENT_TYPES = [FileClosedEvent, FileCreatedEvent, FileOpenedEvent, FileModifiedEvent,
               FileMovedEvent, FileDeletedEvent, DirCreatedEvent, DirMovedEvent, DirDeletedEvent]

RECENT_NS = int(2 * SETTLE_S * 1e9)  # a scanned file modified this recently may be half-written

_STOP = object()


@dataclass(frozen=True)
class _SettleRequest:
    """From a scan to the intake: watch this file settle before queueing it."""

    path: str


class _ExistingPaths(set):
    """The paths a scan saw, plus any path that exists right now: a file that
    appeared after the walk passed its folder must not be marked missing."""

    def __contains__(self, path: object) -> bool:
        return set.__contains__(self, path) or (isinstance(path, str) and os.path.lexists(path))


def regular_file_facts(path: str) -> FileFacts | None:
    """Size and mtime of a regular file (not following a symlink), or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileFacts(path, st.st_size, st.st_mtime_ns)


def walk_candidates(folder: str, roots: list[str],
                    stop: threading.Event | None = None) -> Iterator[FileFacts]:
    """Every candidate image file under `folder` (os.scandir, symlinks not
    followed, hidden folders not entered). Stops early when `stop` is set."""
    stack = [folder]
    while stack:
        if stop is not None and stop.is_set():
            return
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_symlink():
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            if not entry.name.startswith("."):
                                stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False) and is_candidate(entry.path, roots):
                            st = entry.stat(follow_symlinks=False)
                            yield FileFacts(entry.path, st.st_size, st.st_mtime_ns)
                    except OSError:
                        continue  # vanished or unreadable while we looked
        except OSError as err:
            if current == folder:
                log.warning("cannot scan %s: %s", folder, err.strerror)
            else:
                log.debug("cannot scan %s: %s", current, err.strerror)


@dataclass
class _Settling:
    size: int
    mtime_ns: int
    stable_since: float
    writer: bool = False


class _OverflowAlarm(logging.Filter):
    """watchdog reports a kernel inotify queue overflow (events lost) only in its
    log; this filter on that logger turns the report into a rescan of every root."""

    def __init__(self, on_overflow: Callable[[], None]):
        super().__init__()
        self.on_overflow = on_overflow

    def filter(self, record: logging.LogRecord) -> bool:
        if "queue overflowed" in record.getMessage():
            self.on_overflow()
        return True


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's thread: must stay cheap, so it only hands events over."""

    def __init__(self, events: queue_mod.SimpleQueue):
        self._events = events

    def dispatch(self, event: FileSystemEvent) -> None:
        self._events.put(event)


class Watcher:
    """Watches `roots` recursively and keeps the durable queue in step with them.

    A stoppable object: `start()`, `stop()` (idempotent, joins every thread),
    `add_root()` / `remove_root()` for a reload, and a context manager."""

    def __init__(self, store: Store, roots: Iterable[str], *, on_enqueued: Callable[[], None],
                 poll: bool = False, settle_s: float = SETTLE_S, window_s: float = WINDOW_S,
                 inotify_factory: Callable[[], object] | None = None):
        self.store = store
        self.poll = poll
        self.settle_s = settle_s
        self.window_s = window_s
        self.on_enqueued = on_enqueued
        self._initial = [os.path.realpath(os.path.expanduser(r)) for r in roots]
        self._roots: list[str] = []
        self._watches: dict[str, tuple[object, object]] = {}
        self._events: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._handler = _Handler(self._events)
        self._settling: dict[str, _Settling] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inotify = None
        self._inotify_factory = inotify_factory or _inotify_observer
        self._polling: PollingObserver | None = None
        self._intake = threading.Thread(target=self._intake_loop, name="watch-intake", daemon=True)
        self._scans: list[threading.Thread] = []
        self._started = False
        self._stopped = False
        self._rescanning = False
        self.queued = 0  # paths queued (or re-stamped) since start

    @property
    def roots(self) -> list[str]:
        with self._lock:
            return list(self._roots)

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Watcher:
        """Watch every root, then reconcile them in the background."""
        self._started = True
        self._intake.start()
        self._alarm = _OverflowAlarm(self.rescan)
        logging.getLogger("watchdog.observers.inotify_c").addFilter(self._alarm)
        for root in self._initial:
            self.add_root(root)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        self._stop.set()
        logging.getLogger("watchdog.observers.inotify_c").removeFilter(self._alarm)
        for observer in (self._inotify, self._polling):
            if observer is not None:
                observer.stop()
        for observer in (self._inotify, self._polling):
            if observer is not None and observer.is_alive():
                observer.join(timeout)
        self._events.put(_STOP)  # events already received are still written
        self._intake.join(timeout)
        for scan in self._scans:
            scan.join(timeout)
        for thread in [self._intake, *self._scans]:
            if thread.is_alive():
                log.warning("%s did not stop within %.0fs", thread.name, timeout)

    def add_root(self, root: str) -> bool:
        """Watch one more folder (recursively) and reconcile it. False if already watched."""
        root = os.path.realpath(os.path.expanduser(root))
        with self._lock:
            if root in self._roots:
                return False
        if not os.path.isdir(root):
            raise LabelsError(f"cannot watch {root}: it is not a folder (create it, or fix the "
                              "watch setting)")
        self._watches[root] = self._schedule(root)
        with self._lock:
            self._roots.append(root)
        scan = threading.Thread(target=self.reconcile, args=(root,), name="watch-scan", daemon=True)
        self._scans = [s for s in self._scans if s.is_alive()] + [scan]
        scan.start()
        return True

    def remove_root(self, root: str) -> bool:
        """Stop watching a folder (its records stay as they are)."""
        root = os.path.realpath(os.path.expanduser(root))
        with self._lock:
            if root not in self._roots:
                return False
            self._roots.remove(root)
        observer, watch = self._watches.pop(root)
        try:
            observer.unschedule(watch)
        except (KeyError, OSError) as err:
            log.debug("unscheduling %s: %s", root, err)
        log.info("stopped watching %s", root)
        return True

    def _schedule(self, root: str):
        if not self.poll:
            try:
                if self._inotify is None:
                    observer = self._inotify_factory()
                    observer.start()
                    self._inotify = observer
                watch = self._inotify.schedule(self._handler, root, recursive=True,
                                               event_filter=EVENT_TYPES, follow_symlink=False)
                log.info("watching %s", root)
                return self._inotify, watch
            except OSError as err:
                if err.errno not in WATCH_LIMIT_ERRNOS:
                    raise LabelsError(f"cannot watch {root}: {err.strerror}") from err
                log.warning("the inotify watch limit is reached (%s) while watching %s; polling "
                            "it instead. Raise fs.inotify.max_user_watches (and "
                            "fs.inotify.max_user_instances), e.g. `sysctl "
                            "fs.inotify.max_user_watches=524288`, then restart labelsd",
                            err.strerror, root)
        if self._polling is None:
            self._polling = PollingObserver(timeout=POLL_INTERVAL_S)
            self._polling.start()
        watch = self._polling.schedule(self._handler, root, recursive=True, event_filter=EVENT_TYPES)
        log.info("watching %s (polling every %.0fs)", root, POLL_INTERVAL_S)
        return self._polling, watch

    # ------------------------------------------------------------------ reconcile

    def rescan(self) -> None:
        """Reconcile every root again (events were lost), unless a rescan is running."""
        with self._lock:
            if self._rescanning or self._stop.is_set():
                return
            self._rescanning = True
        log.warning("inotify dropped events (queue overflow); rescanning %d folder(s)",
                    len(self.roots))

        def run() -> None:
            try:
                for root in self.roots:
                    self.reconcile(root)
            finally:
                with self._lock:
                    self._rescanning = False

        scan = threading.Thread(target=run, name="watch-rescan", daemon=True)
        self._scans = [s for s in self._scans if s.is_alive()] + [scan]
        scan.start()

    def reconcile(self, root: str) -> None:
        """Queue new or changed files under `root`, mark vanished ones missing."""
        started = time.monotonic()
        seen: set[str] = set()
        chunk: list[FileFacts] = []
        queued = 0
        try:
            # Rows still queued from before (a crash, a stop) are read fresh when
            # claimed; re-stamping them would only send a claimed one round twice.
            waiting = _queued_under(self.store, root)
            for facts in walk_candidates(root, self.roots or [root], self._stop):
                seen.add(facts.path)
                if facts.path in waiting:
                    continue
                if time.time_ns() - facts.mtime_ns < RECENT_NS:
                    # maybe still being written: the settle tracker decides when it is whole
                    self._events.put(_SettleRequest(facts.path))
                    continue
                chunk.append(facts)
                if len(chunk) >= SCAN_CHUNK:
                    queued += self._enqueue(chunk)
                    chunk = []
            queued += self._enqueue(chunk)
            if self._stop.is_set():
                return
            missing = queue.mark_missing_under(self.store, root, _ExistingPaths(seen))
        except LabelsError as err:
            log.error("scanning %s failed: %s", root, err)
            return
        log.info("scanned %s: %d files, %d queued, %d missing (%.1fs)",
                 root, len(seen), queued, missing, time.monotonic() - started)

    # ------------------------------------------------------------------ intake

    def _intake_loop(self) -> None:
        next_check = 0.0
        while True:
            timeout = min(self.settle_s / 2, IDLE_WAIT_S) if self._settling else IDLE_WAIT_S
            batch = self._gather(timeout)
            stopping = _STOP in batch
            try:
                self._apply([e for e in batch if e is not _STOP])
                now = time.monotonic()
                if self._settling and now >= next_check:
                    self._check_settling(now)
                    next_check = now + self.settle_s / 2
            except LabelsError as err:
                # Database trouble: the events of this window are lost, but the
                # next start's reconcile scan finds every file that was missed.
                log.error("could not record file changes: %s", err)
            except Exception:  # noqa: BLE001 - one bad event must not end the watch
                log.exception("error handling file events; continuing")
            if stopping:
                return

    def _gather(self, timeout: float) -> list:
        try:
            batch = [self._events.get(timeout=timeout)]
        except queue_mod.Empty:
            return []
        deadline = time.monotonic() + self.window_s
        while batch[-1] is not _STOP and len(batch) < 10_000:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._events.get(timeout=left))
            except queue_mod.Empty:
                break
        return batch

    def _apply(self, events: list[FileSystemEvent | _SettleRequest]) -> None:
        """Apply a window of events in order; consecutive enqueues share one transaction."""
        complete: dict[str, None] = {}  # paths to queue now, in arrival order

        def flush() -> None:
            if complete:
                facts = [f for f in map(regular_file_facts, complete) if f is not None]
                complete.clear()
                self._enqueue(facts)

        for event in events:
            if isinstance(event, _SettleRequest):
                self._settle(event.path, created=True)
                continue
            src = self._path(event.src_path)
            dest = self._path(getattr(event, "dest_path", "") or "")
            if isinstance(event, FileClosedEvent):
                self._settling.pop(src, None)
                if self._tracked(src):
                    complete[src] = None
            elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
                if event.is_synthetic:
                    continue  # inside a folder moved in: the DirMovedEvent walk queues it
                if self._tracked(src):
                    self._settle(src, created=isinstance(event, FileCreatedEvent))
            elif isinstance(event, FileOpenedEvent):
                pending = self._settling.get(src)
                if pending is not None:
                    pending.writer = True  # a local writer: its close will come
            elif isinstance(event, FileMovedEvent):
                self._settling.pop(src, None)
                flush()
                self._moved(src, dest)
            elif isinstance(event, FileDeletedEvent):
                self._settling.pop(src, None)
                if self._tracked(src):
                    flush()
                    queue.mark_missing(self.store, [src])
            elif isinstance(event, DirMovedEvent):
                flush()
                if src and not dest:  # moved out of the tree
                    self._forget_folder(src)
                elif dest and not src:  # moved in: inotify reports nothing for its files
                    for facts in walk_candidates(dest, self.roots, self._stop):
                        complete[facts.path] = None
            elif isinstance(event, DirDeletedEvent):
                flush()
                self._forget_folder(src)
        flush()

    def _moved(self, src: str, dest: str) -> None:
        src_ok, dest_ok = bool(src) and self._tracked(src), bool(dest) and self._tracked(dest)
        if dest_ok and src_ok:
            if not queue.move_path(self.store, src, dest, regular_file_facts(dest)):
                self._enqueue([f for f in [regular_file_facts(dest)] if f])
        elif dest_ok:  # moved in from outside, or renamed from a temporary name
            self._enqueue([f for f in [regular_file_facts(dest)] if f])
        elif src_ok:  # moved out, or renamed to a name we ignore
            queue.mark_missing(self.store, [src])

    def _forget_folder(self, folder: str) -> None:
        missing = queue.mark_missing_under(self.store, folder, _ExistingPaths())
        if missing:
            log.info("%d tracked file(s) under %s are gone", missing, folder)

    def _settle(self, path: str, created: bool) -> None:
        facts = regular_file_facts(path)
        if facts is None:
            self._settling.pop(path, None)
            return
        pending = self._settling.get(path)
        now = time.monotonic()
        if pending is None:
            if not created and not self.poll:
                return  # inotify: a modified file's close will queue it
            self._settling[path] = _Settling(facts.size, facts.mtime_ns, now)
        elif (pending.size, pending.mtime_ns) != (facts.size, facts.mtime_ns):
            pending.size, pending.mtime_ns, pending.stable_since = facts.size, facts.mtime_ns, now
            pending.writer = pending.writer or not self.poll

    def _check_settling(self, now: float) -> None:
        ready = []
        for path, pending in list(self._settling.items()):
            facts = regular_file_facts(path)
            if facts is None:
                del self._settling[path]
            elif (pending.size, pending.mtime_ns) != (facts.size, facts.mtime_ns):
                pending.size, pending.mtime_ns, pending.stable_since = (
                    facts.size, facts.mtime_ns, now)
            elif now - pending.stable_since >= (WRITER_IDLE_S if pending.writer else self.settle_s):
                del self._settling[path]
                ready.append(facts)
        self._enqueue(ready)

    # ------------------------------------------------------------------ helpers

    def _path(self, raw) -> str:
        if not raw:
            return ""
        return canonical_path(os.fsdecode(raw))

    def _tracked(self, path: str) -> bool:
        """A candidate image under one of the roots (symlinked folders resolved,
        so nothing outside a root is ever recorded)."""
        return is_candidate(path, self.roots)

    def _enqueue(self, facts: list[FileFacts]) -> int:
        if not facts:
            return 0
        n = queue.enqueue(self.store, facts)
        if n:
            self.queued += n
            log.debug("queued %d file(s)", n)
            self.on_enqueued()
        return n


def _queued_under(store: Store, root: str) -> set[str]:
    from .schema import QueueItem

    prefix = root.rstrip("/") + "/"
    with store.read() as session:
        return set(session.scalars(select(QueueItem.path).where(
            QueueItem.state == "queued", QueueItem.path.startswith(prefix, autoescape=True))))


def _inotify_observer():
    # full events: a file moved in from outside arrives as a move with no source
    # (complete at once), not as a bare creation that has to settle.
    from watchdog.observers.inotify import InotifyObserver

    return InotifyObserver(generate_full_events=True)
