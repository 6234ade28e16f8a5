"""The comparisons behind /duplicates and /api/duplicates.

`find_duplicates` compares every pair of a library's vectors: about 30 to 60 s at
100,000 photos on one core. That is too long for one request (a reverse proxy's
read timeout is often 60 s, and a person sees nothing meanwhile) and too costly to
repeat at every reload or page of groups. So a comparison runs on one worker thread
of the server, one at a time, in the order asked; the last KEEP results are kept
(by their parameters) and every page of groups is served from memory. A page asked
for while its comparison runs says how far it is and refreshes itself; /api/duplicates
waits for it. A comparison no one waits for any more (not asked for in ABANDON_S:
the tab was closed) is stopped at its next block of rows, so that a threshold typed
by mistake (0.1: nearly every pair) does not keep a core busy for hours.

A result records the library's state it was found in (`library_state`: counters, the
same cost at any size); a page shows a result of another state with a note and a
"compare again" link, and the API always compares again when the state changed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from labelsd.errors import LabelsError
from labelsd.loopthread import LoopThread
from labelsd.serve.duplicates import Duplicates, find_duplicates

log = logging.getLogger(__name__)

KEEP = 3  # finished results kept (a result of a low threshold can be large)
MAX_WAITING = 4  # comparisons waiting for the worker; more is "busy"
ABANDON_S = 30.0  # a waiting page refreshes every few seconds: 30 s without one is a closed tab


@dataclass(frozen=True)
class Ask:
    """The parameters of one comparison (`labels duplicates`' options)."""

    threshold: float
    include_missing: bool
    family: str | None


class Abandoned(Exception):
    """No one waits for this comparison any more (or the server stops)."""


class Busy(LabelsError):
    """Too many comparisons are waiting already."""


@dataclass(eq=False)
class Job:
    ask: Ask
    state: tuple  # library_state when it was asked for
    asked_at: float = field(default_factory=time.monotonic)  # the last time someone asked
    started_at: float | None = None  # monotonic
    finished_at: float | None = None  # wall clock (time.time())
    took_s: float | None = None
    done: int = 0  # block pairs compared, of `total`
    total: int = 0
    result: Duplicates | None = None
    error: str | None = None
    abandoned: bool = False
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.ended.is_set()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def running_s(self) -> float:
        return time.monotonic() - self.started_at if self.started_at is not None else 0.0


class DuplicateJobs(LoopThread):
    """The server's comparisons: `ask` one (started, or the one already asked for),
    `wait` for it. `reader` gives a read-only view of the library on the calling
    thread (the worker's own, with its own connection)."""

    def __init__(self, reader: Callable[[], object]):
        super().__init__("labels-serve-duplicates")
        self._reader = reader
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: OrderedDict[Ask, Job] = OrderedDict()
        self._queue: deque[Job] = deque()
        self._started = False

    def ask(self, ask: Ask, state: tuple, *, fresh: bool = False) -> Job:
        """The comparison for `ask`: the one kept or running, else a new one queued.
        `fresh`: compare again when the kept result was found in another `state`.
        Busy when MAX_WAITING others wait already."""
        with self._lock:
            job = self._jobs.get(ask)
            if job is not None:
                job.asked_at = time.monotonic()
                self._jobs.move_to_end(ask)
                redo = job.finished and (job.abandoned or job.error is not None
                                         or (fresh and job.state != state))
                if not redo:
                    return job
            if len(self._queue) >= MAX_WAITING:
                raise Busy(f"{len(self._queue)} comparisons are waiting already: try again in a minute")
            job = Job(ask, state)
            self._jobs[ask] = job
            self._jobs.move_to_end(ask)
            self._queue.append(job)
            self._forget_old()
            if not self._started:
                self._started = True
                self.start()
            self._wake.notify()
            return job

    def wait(self, job: Job) -> Job:
        """Wait until `job` ends, saying meanwhile that someone still waits for it; or
        until the server stops (the job then has no result)."""
        while not job.ended.wait(0.25):
            if self._stop.is_set():
                break
            job.asked_at = time.monotonic()
        return job

    def _forget_old(self) -> None:
        finished = [ask for ask, job in self._jobs.items() if job.finished]
        for ask in finished[:max(0, len(finished) - KEEP)]:  # oldest asked for first
            del self._jobs[ask]

    def cancel(self) -> None:
        """The server stops: the comparison running ends at its next block of rows and
        whoever waits for one is answered at once (without waiting for the thread)."""
        with self._lock:
            self._stop.set()
            self._wake.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        self.cancel()
        if self._started:
            super().stop(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stop.is_set():
                    self._wake.wait(1.0)
                if self._stop.is_set():
                    for job in self._queue:
                        job.abandoned = True
                        job.ended.set()
                    return
                job = self._queue.popleft()
            self._compare(job)

    def _compare(self, job: Job) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            if self._stop.is_set() or time.monotonic() - job.asked_at > ABANDON_S:
                raise Abandoned

        job.started_at = time.monotonic()
        try:
            progress(0, 0)  # asked for long ago, and no one waits any more
            a = job.ask
            job.result = find_duplicates(self._reader(), threshold=a.threshold,
                                         include_missing=a.include_missing, family=a.family,
                                         progress=progress)
            job.done = job.total
        except Abandoned:
            job.abandoned = True
            log.info("duplicates at %s: stopped, no one waits for it", job.ask.threshold)
        except LabelsError as err:  # the library cannot be read now: said on the page
            job.error = str(err)
        except Exception as err:  # noqa: BLE001 - the page says it; the worker goes on
            log.exception("comparing for duplicates failed")
            job.error = f"the comparison failed ({type(err).__name__}: {err})"
        finally:
            job.took_s = job.running_s()
            job.finished_at = time.time()
            job.ended.set()


__all__ = ["ABANDON_S", "Abandoned", "Ask", "Busy", "DuplicateJobs", "Job"]
