"""Watching folders: filesystem events in, durable queue rows out.

The watchdog callbacks only put events on an in-memory queue. One intake thread takes
them off in small windows (~50 ms) and hands each window to the intake (intake.py),
which turns it into a few database transactions; `on_enqueued()` then wakes the pipeline.

A reconcile scan (reconcile.py) brings the store in step with a root in a background
thread: at start, for a root added by a reload, after an inotify queue overflow, when a
root is watched anew (watches.py), every RESCAN_S for a root no observer can watch, and
when a folder that could not be read becomes readable (checked with the roots, every
ROOT_CHECK_S, on the intake thread). With poll = true in a fleet, only the node holding
a root's poll lease polls it (shared.py).
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Iterable

from watchdog.events import FileClosedEvent

from labelsd.backoff import Backoff
from labelsd.errors import LabelsError
from labelsd.paths import canonical_root, shown, under_root
from labelsd.records import FileFacts
from labelsd.store import workqueue
from labelsd.store.engine import Store
from labelsd.watch.backlog import Backlog
from labelsd.watch.intake import EVENT_TYPES, Handler, Intake, OverflowAlarm, SettleRequest, gather
from labelsd.watch.observers import inotify_observer
from labelsd.watch.reconcile import RescanPacer, reconcile_root
from labelsd.watch.settle import SETTLE_S, SettleTracker
from labelsd.watch.shared import fleet_polls
from labelsd.watch.walk import UnreadableFolders
from labelsd.watch.watches import REWATCHED, VANISHED, Watches
from labelsd.watch.watchlimit import inotify_has_room

log = logging.getLogger(__name__)

WINDOW_S = 0.05  # how long the intake gathers events into one transaction
IDLE_WAIT_S = 5.0  # intake wake-up when nothing is pending (stop() wakes it at once)
ROOT_CHECK_S = 5.0  # how often each root is checked to still be the folder being watched

_STOP = object()


class Watcher:
    """Watches `roots` recursively and keeps the durable queue in step with them. A stoppable
    object: `start()`, `stop()` (idempotent, joins every thread), `add_root()` / `remove_root()`
    for a reload, and a context manager."""

    def __init__(self, store: Store, roots: Iterable[str], *, on_enqueued: Callable[[], None],
                 poll: bool = False, settle_s: float = SETTLE_S, window_s: float = WINDOW_S,
                 inotify_factory: Callable[[], object] | None = None,
                 watch_room: Callable[[str], bool] = inotify_has_room,
                 root_check_s: float = ROOT_CHECK_S, walk_leases=None):
        self.store = store
        self.walk_leases = walk_leases  # store.walks.WalkLeases: one start-up walk per root in a fleet
        self.poll = poll
        self.settle_s = settle_s
        self.window_s = window_s
        self.on_enqueued = on_enqueued
        self._initial = [canonical_root(r) for r in roots]
        self._roots: list[str] = []
        self.root_check_s = root_check_s
        self._events: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._watches = Watches(Handler(self._events), EVENT_TYPES, poll=poll,
                                inotify_factory=inotify_factory or inotify_observer,
                                watch_room=watch_room)
        self._polls = fleet_polls(self._watches, poll, walk_leases, self.reconcile)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._unreadable = UnreadableFolders()  # folders that could not be listed
        self._intake_of = Intake(store, roots=lambda: self.roots, enqueue=self._enqueue,
                                 settling=SettleTracker(settle_s, poll=poll), stop=self._stop,
                                 unreadable=self._unreadable.note)
        self._pacer = RescanPacer()  # when each root no observer watches is rescanned
        self._intake = threading.Thread(target=self._intake_loop, name="watch-intake", daemon=True)
        self._scans: list[threading.Thread] = []
        self._started = False
        self._stopped = False
        self._rescanning = False
        self._backlog = Backlog(lambda path: [r for r in self.roots if under_root(path, r)],
                                lambda root: self._start_scan(self.reconcile, root))
        self.queued = 0  # paths queued (or re-stamped) since start

    @property
    def roots(self) -> list[str]:
        with self._lock:
            return list(self._roots)

    @property
    def absent_roots(self) -> dict[str, str]:
        """Roots that are gone (deleted, unmounted, unreachable) for now, with why."""
        return self._watches.absent()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Watcher:
        """Watch every root, then reconcile them in the background."""
        self._started = True
        self._intake.start()
        self._alarm = OverflowAlarm(self.rescan)
        logging.getLogger("watchdog.observers.inotify_c").addFilter(self._alarm)
        for root in self._initial:
            self.add_root(root, startup=True)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        self._stop.set()
        logging.getLogger("watchdog.observers.inotify_c").removeFilter(self._alarm)
        self._watches.stop(timeout)
        self._polls.stop()  # poll leases handed back
        self._events.put(_STOP)  # events already received are still written
        self._intake.join(timeout)
        for scan in self._scans:
            scan.join(timeout)
        for thread in [self._intake, *self._scans]:
            if thread.is_alive():
                log.warning("%s did not stop within %.0fs", thread.name, timeout)

    def add_root(self, root: str, startup: bool = False) -> bool:
        """Watch one more folder (recursively) and reconcile it. False if already watched."""
        root = canonical_root(root)
        with self._lock:
            if root in self._roots:
                return False
        if not os.path.isdir(root):
            raise LabelsError(f"cannot watch {root}: it is not a folder (create it, or fix the "
                              "watch setting)")
        self._polls.add(root)  # watched, or polled if this node holds its poll lease
        with self._lock:
            self._roots.append(root)
        self._start_scan(self._startup_walk if startup else self.reconcile, root)
        return True

    def _startup_walk(self, root: str) -> None:
        """The start-up reconcile, walked by one node of a fleet at a time (walk_leases)."""
        if self.walk_leases is None:
            self.reconcile(root)
        else:
            self.walk_leases.walk(root, self._stop, self.reconcile)

    def _start_scan(self, target: Callable[..., None], *args, name: str = "watch-scan") -> None:
        scan = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._scans = [s for s in self._scans if s.is_alive()] + [scan]
        scan.start()

    def remove_root(self, root: str) -> bool:
        """Stop watching a folder (its records stay as they are)."""
        root = canonical_root(root)
        with self._lock:
            if root not in self._roots:
                return False
            self._roots.remove(root)
        self._polls.remove(root)
        log.info("stopped watching %s", shown(root))
        return True

    def _check_roots(self) -> None:
        """Each root must still be the folder its watch is on (watches.py): the files
        of one deleted or unmounted are missing; one watched anew is rescanned."""
        self._polls.tick()  # poll leases (shared.py) renewed, or taken over from a dead node
        for root in self.roots:
            if self._stop.is_set():
                return
            change = self._watches.check(root)
            if change == VANISHED:
                self._intake_of.forget_folder(root)
            elif change == REWATCHED or not self._watches.healthy(root):
                self._start_scan(self.reconcile, root)
        self._check_unreadable()
        self._rescan_unwatched()

    def _check_unreadable(self) -> None:
        """A folder the walk could not list (said at WARNING) is watched and scanned once readable."""
        readable = self._unreadable.take_readable()
        for root in self.roots:
            now_readable = [f for f in readable if under_root(f, root)]
            if now_readable:
                log.info("%s can be read now: watching and scanning it",
                         ", ".join(shown(f) for f in now_readable))
                self._watches.rewatch(root)
                self._start_scan(self.reconcile, root)

    def _rescan_unwatched(self) -> None:
        """Roots no observer can watch (watches.py) are rescanned (reconcile.RescanPacer)."""
        for root in self._pacer.due(self._watches.rescanned(), time.monotonic()):
            self._start_scan(self._pacer.run, root, self.reconcile, name="watch-rescan")

    def _check_watch_room(self, roots: Iterable[str]) -> None:
        """Folders appeared under these roots: one inotify has no watch left for is polled, rescanned."""
        for root in roots:
            if self._stop.is_set():
                return
            if self._watches.poll_if_full(root):
                self._start_scan(self.reconcile, root)

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

        self._start_scan(run, name="watch-rescan")

    def reconcile(self, root: str) -> bool:
        """Queue new or changed files under `root`, mark vanished ones missing.
        True when the walk finished."""
        started, backoff = time.monotonic(), Backoff()
        unreadable: set[str] = set()
        while True:
            try:
                result = reconcile_root(self.store, root, self.roots or [root],
                                        enqueue=self._enqueue, settle_later=self._settle_later,
                                        stop=self._stop, unreadable=unreadable)
                self._unreadable.note(unreadable)
                break
            except LabelsError as err:  # database trouble: the scan is tried again, not lost
                level = logging.WARNING if backoff.failures else logging.ERROR
                log.log(level, "scanning %s failed: %s; trying again in %.1fs", root, err,
                        backoff.delay)
                if backoff.wait(self._stop):
                    return False
        if result.finished:
            log.info("scanned %s: %d files, %d queued, %d missing (%.1fs)", shown(root), result.seen,
                     result.queued, result.missing, time.monotonic() - started)
        return result.finished

    def _settle_later(self, path: str) -> None:
        """From a scan thread: the intake's settle tracker decides when `path` is whole."""
        self._events.put(SettleRequest(path))

    # ------------------------------------------------------------------ intake

    def _intake_loop(self) -> None:
        next_check = 0.0
        next_root_check = time.monotonic() + self.root_check_s
        idle_wait = min(IDLE_WAIT_S, self.root_check_s)
        while True:
            settling = self._intake_of.settling
            timeout = min(self.settle_s / 2, idle_wait) if settling else idle_wait
            batch = gather(self._events, self._backlog.due_in(timeout), self.window_s, _STOP)
            stopping = _STOP in batch
            events, now = [e for e in batch if e is not _STOP], time.monotonic()
            if settling and now >= next_check:  # as closes, so the backlog keeps them too
                events += [FileClosedEvent(f.path) for f in settling.take_settled(now)]
                next_check = now + self.settle_s / 2
            events = self._backlog.pending(events, force=stopping)
            try:
                grown = self._intake_of.apply(events)
                self._backlog.succeeded()
                if grown and not self.poll:
                    self._check_watch_room(grown)
                if now >= next_root_check and not stopping:
                    self._check_roots()
                    next_root_check = now + self.root_check_s
            except LabelsError as err:  # database trouble: kept and retried (backlog.py)
                self._backlog.failed(events, err)
            except Exception:  # noqa: BLE001 - one bad event must not end the watch
                log.exception("error handling file events; continuing")
            if stopping:
                return

    def _enqueue(self, facts: list[FileFacts]) -> int:
        if not facts:
            return 0
        n = workqueue.enqueue(self.store, facts)
        if n:
            self.queued += n
            log.debug("queued %d file(s)", n)
            self.on_enqueued()
        return n

