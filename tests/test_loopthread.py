"""The one stoppable-thread shape (labelsd.loopthread) that the heartbeat, the
systemd watchdog pinger and the PostgreSQL queue listener share: start() returns
the component, stop() joins, is safe twice and from the thread itself."""

from __future__ import annotations

import threading

import pytest

from labelsd.liveness import Heartbeat
from labelsd.loopthread import LoopThread
from labelsd.notify import WatchdogPinger
from servicekit import wait_for

DEADLINE_S = 10.0


class Ticker(LoopThread):
    """Counts turns until stopped; can stop itself from its own thread."""

    def __init__(self, stop_itself_after: int | None = None):
        super().__init__("test-ticker")
        self.turns = 0
        self.stop_itself_after = stop_itself_after
        self.ended = threading.Event()

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.01):
                self.turns += 1
                if self.turns == self.stop_itself_after:
                    self.stop()  # must neither raise nor wait for itself
        finally:
            self.ended.set()


def _alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def test_stop_joins_the_thread_and_is_safe_twice():
    ticker = Ticker()
    assert ticker.start() is ticker
    wait_for(lambda: ticker.turns >= 2, DEADLINE_S, "the ticker to turn")
    ticker.stop()
    assert not _alive("test-ticker")
    ticker.stop()  # a second stop: nothing to do, no error


def test_a_loop_may_stop_itself():
    ticker = Ticker(stop_itself_after=3).start()
    assert ticker.ended.wait(DEADLINE_S)
    ticker.stop()
    assert ticker.turns == 3 and not _alive("test-ticker")


def test_a_loop_thread_must_say_what_it_runs():
    with pytest.raises(TypeError):
        LoopThread("nothing")  # abstract: _run is missing


def test_the_service_threads_are_loop_threads():
    beats = threading.Event()
    heartbeat = Heartbeat(None, "n", beat=beats.set, served=None, on_lost=print, interval_s=0.01)
    pinger = WatchdogPinger(None, 0.01, lambda: False)
    for component in (heartbeat, pinger):
        assert isinstance(component, LoopThread)
    assert heartbeat.start() is heartbeat and pinger.start() is pinger
    assert beats.wait(DEADLINE_S)
    heartbeat.stop()
    pinger.stop()
    pinger.stop()
    assert not _alive("heartbeat") and not _alive("sd-watchdog")


def test_the_queue_listener_is_a_loop_thread():
    from labelsd.store.wakeups import QueueListener

    assert issubclass(QueueListener, LoopThread)
