"""A fleet on one PostgreSQL: a judgement made on one node holds against another
node's batch in flight. Two processes: this test is one node (it rejects or
confirms), a child process is the other, relabelling the same content, held at
a chosen point of its write transaction until this node has acted."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from labelsd.errors import LabelNotCarried
from labelsd.serve.query import search
from labelsd.store import judgements
from labelsd.store.engine import open_store
from servicekit import wait_for
from test_relabel import INCEPTION, LITE, label
from test_relabel import TABBY as TABBY_TOP3

TABBY, TIGER_CAT = 281, 282
SHA = "a" * 64
TESTS = Path(__file__).resolve().parent

# The other node: relabels `path` with `model` (TABBY or MOPED predictions), its
# writer held inside its transaction at `where` ("before" or "after" the point
# where the relabelling locks the content it relabels) until the file `go` exists.
OTHER_NODE = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from labelsd.store import contents
from labelsd.store.engine import open_store
from test_relabel import MOPED, TABBY, label

url, folder, where, path, model, top3 = sys.argv[2:8]
keep = contents.keep_confirmed

def held(*args, **kwargs):
    result = keep(*args, **kwargs) if where == "after" else None
    open(os.path.join(folder, "held"), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(folder, "go")):
        if time.monotonic() > deadline:
            sys.exit("never released")
        time.sleep(0.01)
    return result if where == "after" else keep(*args, **kwargs)

contents.keep_confirmed = held
with open_store(url) as store:
    label(store, path, "a" * 64, model, {"TABBY": TABBY, "MOPED": MOPED}[top3])
print("committed", flush=True)
"""


class OtherNode:
    """The child process, held inside its batch's transaction until `release()`."""

    def __init__(self, pg_url: str, tmp_path: Path, where: str, path: str, model: str, top3: str,
                 *, hold: bool = True):
        self.folder = tmp_path / f"node-{where}-{model.replace('/', '-')}-{top3}"
        self.folder.mkdir()
        if not hold:
            (self.folder / "go").touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OTHER_NODE, str(TESTS), pg_url, str(self.folder), where, path,
             model, top3], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: (self.folder / "held").exists() or self.proc.poll() is not None,
                 60, "the other node's batch", interval=0.01)
        assert self.proc.poll() is None, self.proc.communicate()

    def release(self) -> None:
        (self.folder / "go").touch()
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0 and "committed" in out, err


def lock_waiters(store) -> int:
    from sqlalchemy import text

    with store.read() as session:
        return session.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one()


@pytest.fixture
def cat(pg_url, tmp_path):
    """A photo labelled tabby, tiger cat, Egyptian cat (by InceptionV3)."""
    path = str(tmp_path / "cat.jpg")
    with open_store(pg_url) as store:
        label(store, path, SHA, INCEPTION, TABBY_TOP3)
    return path


def test_a_batch_in_flight_never_brings_a_label_rejected_meanwhile_back(pg_url, tmp_path, cat):
    # the other node relabels the photo with a model that says tabby again; its batch
    # has read what it needs when this node rejects tabby, and writes after
    other = OtherNode(pg_url, tmp_path, "before", cat, LITE, "TABBY")
    with open_store(pg_url) as store:
        assert judgements.reject(store, [SHA], TABBY) == [SHA]  # not held up by the batch
        other.release()
        rec = store.record(cat)
        assert rec.model == LITE  # the batch was written ...
        assert [p.label for p in rec.labels] == ["tiger cat", "Egyptian cat"]  # ... without tabby
        assert [r.label for r in rec.rejected] == ["tabby"]
        assert search(store, "tabby") == []
        # and the other node's next write, not held, neither
        OtherNode(pg_url, tmp_path, "before", cat, INCEPTION, "TABBY", hold=False).release()
        assert [p.label for p in store.record(cat).labels] == ["tiger cat", "Egyptian cat"]


def test_a_confirmation_and_a_relabelling_never_interleave(pg_url, tmp_path, cat):
    # the other node relabels with a top 3 that lacks tiger cat, and holds the content:
    # a confirmation of tiger cat made meanwhile waits, then finds it gone
    other = OtherNode(pg_url, tmp_path, "after", cat, LITE, "MOPED")
    with open_store(pg_url) as store:
        outcome: dict = {}

        def confirm() -> None:
            try:
                outcome["changed"] = judgements.confirm(store, [SHA], TIGER_CAT)
            except LabelNotCarried as err:
                outcome["refused"] = err

        thread = threading.Thread(target=confirm)
        thread.start()
        wait_for(lambda: lock_waiters(store) >= 1 or outcome, 60, "the confirmation to wait",
                 interval=0.01)
        assert not outcome, "the confirmation did not wait for the relabelling"
        other.release()
        thread.join(60)
        assert "refused" in outcome
        rec = store.record(cat)
        assert [p.label for p in rec.labels] == ["moped", "motor scooter", "crash helmet"]
        assert judgements.judgements_of(store, [SHA]) == {}


def test_a_confirmation_made_before_the_relabelling_locks_is_kept(pg_url, tmp_path, cat):
    other = OtherNode(pg_url, tmp_path, "before", cat, LITE, "MOPED")
    with open_store(pg_url) as store:
        assert judgements.confirm(store, [SHA], TIGER_CAT) == [SHA]
        other.release()
        assert [(p.label, p.confirmed) for p in store.record(cat).labels] == [
            ("moped", False), ("motor scooter", False), ("tiger cat", True)]

