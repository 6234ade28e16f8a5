"""The real `labelsd` stopped while something hangs (issue 31). A hook loaded
into the service (a sitecustomize.py on its PYTHONPATH, nothing in labelsd
itself) makes the read of any photo named stuck* never return, as a read on a
hung network share does, and, for the second run, makes marking the node
stopped never return either:

1. SIGTERM with a read stuck: the pipeline gives up on it, its claim goes back
   to the queue as a failed attempt, the others as before, exit 0 well within
   systemd's TimeoutStopSec=30 (before the fix: the decode pool's shutdown waited
   on the stuck thread for ever, and systemd had to kill it);
2. SIGTERM while a step of stopping hangs: the shutdown deadline (20 s) hands the
   claims back and ends the process, exit 1.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from imagegen import make_image
from labelsd.service import SHUTDOWN_DEADLINE_S
from servicekit import Service, service_env, wait_for

SIZE = (320, 240)
SETTLE_S = 180

HOOK = '''
import os, threading

_never = threading.Event()


def _stuck(fn, when):
    def wrapper(*args, **kwargs):
        if when(*args):
            _never.wait()  # never returns, as a read on a hung share
        return fn(*args, **kwargs)
    return wrapper


if os.environ.get("LABELSD_TEST_STUCK_READ"):
    import labelsd.pipeline.reader as reader
    reader.read_file = _stuck(reader.read_file, lambda path, *a: os.path.basename(path).startswith("stuck"))
if os.environ.get("LABELSD_TEST_STUCK_STOP"):
    import labelsd.store.nodes as nodes
    nodes.mark_stopped = _stuck(nodes.mark_stopped, lambda *a: True)
'''


@pytest.fixture(scope="module")
def svc(tmp_path_factory, weights_files):
    home = Path(os.path.realpath(tmp_path_factory.mktemp("stuck")))
    (home / "inbox").mkdir()
    (home / "hook").mkdir()
    (home / "hook" / "sitecustomize.py").write_text(HOOK)
    env = service_env(home, LABELSD_TEST_STUCK_READ="1",
                      PYTHONPATH=os.pathsep.join(filter(None, [str(home / "hook"),
                                                               os.environ.get("PYTHONPATH")])))
    service = Service(home, db=home / "labels.db", weights=weights_files.legacy_h5,
                      watch=[home / "inbox"], env=env)
    service.inbox = home / "inbox"
    yield service
    if service.alive():
        service.proc.kill()
        service.proc.wait(10)


def stuck_row(svc) -> tuple:
    return svc.query("SELECT claimed_by, attempts, last_error FROM queue WHERE path = ?",
                     (str(svc.inbox / "stuck.jpg"),))[0]


def sigterm(svc, within: float) -> tuple[int, float]:
    began = time.monotonic()
    svc.signal(signal.SIGTERM)
    code = svc.wait_exit(within)
    return code, time.monotonic() - began


def test_a_stuck_read_never_holds_sigterm(svc):
    svc.start().wait_ready()
    staging = svc.inbox.parent / "staging"
    staging.mkdir()
    stuck = make_image(staging / "stuck.jpg", size=SIZE, seed=1)
    others = [make_image(staging / f"ok{i}.jpg", size=SIZE, seed=10 + i) for i in range(3)]
    for path in others:
        os.rename(path, svc.inbox / path.name)
    svc.wait_settled([svc.inbox / p.name for p in others], SETTLE_S)
    os.rename(stuck, svc.inbox / stuck.name)  # alone: a stuck read holds up the rest of its claim
    wait_for(lambda: svc.query("SELECT claimed_by FROM queue WHERE path = ?",
                               (str(svc.inbox / "stuck.jpg"),)) and stuck_row(svc)[0] is not None,
             60, "the stuck photo's claim", on_timeout=svc.tail)

    code, took = sigterm(svc, SHUTDOWN_DEADLINE_S + 15)

    assert code == 0 and took < 15, (code, took, svc.tail())
    claimed_by, attempts, error = stuck_row(svc)
    assert claimed_by is None and attempts == 1 and "did not finish" in error, stuck_row(svc)
    assert "reading stuck.jpg did not finish" in svc.log()


def test_a_hang_while_stopping_ends_at_the_deadline(svc):
    svc.env["LABELSD_TEST_STUCK_STOP"] = "1"
    svc.start().wait_ready()
    # After its back-off (2 s) the stuck photo is claimed again, and its read hangs again.
    wait_for(lambda: stuck_row(svc)[0] is not None, 60, "the stuck photo claimed again",
             on_timeout=svc.tail)

    code, took = sigterm(svc, SHUTDOWN_DEADLINE_S + 15)

    assert code == 1 and SHUTDOWN_DEADLINE_S - 1 < took < SHUTDOWN_DEADLINE_S + 8, (code, took, svc.tail())
    log = svc.log()
    assert f"stopping did not finish within {SHUTDOWN_DEADLINE_S:.0f} s" in log
    assert stuck_row(svc)[0] is None and stuck_row(svc)[1] == 2  # a second failed attempt
