"""labelsd.backoff: the one back-off every retry loop of the service uses."""

from __future__ import annotations

import threading

import pytest

from labelsd.backoff import Backoff, Stopped, retry_unavailable
from labelsd.errors import StoreUnavailable


def test_the_wait_doubles_up_to_the_most_and_starts_again_after_a_success():
    b = Backoff(first_s=0.1, most_s=0.5)
    assert [b.failed() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert b.failures == 5 and b.due_in() > 0
    b.reset()
    assert b.failed() == 0.1


def test_retry_unavailable_tries_until_the_store_answers(caplog):
    answers = iter([StoreUnavailable("the disk holding the database x is full"),
                    StoreUnavailable("locked"), "rows"])

    def op():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_unavailable(op, threading.Event(), "reading") == "rows"
    assert "reading: the disk holding the database x is full; retrying in 0.1s" in caplog.text


def test_retry_unavailable_ends_when_stopped_and_passes_other_errors_on():
    stop = threading.Event()
    stop.set()

    def unavailable():
        raise StoreUnavailable("locked")

    with pytest.raises(Stopped):
        retry_unavailable(unavailable, stop, "writing")

    def broken():
        raise ValueError("bad row")

    with pytest.raises(ValueError):
        retry_unavailable(broken, threading.Event(), "writing")
