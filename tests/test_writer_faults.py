"""The pipeline's writer against a database that refuses (issue 31), on SQLite and
PostgreSQL alike (`db_url`): a database outage (locked, a lock wait that times out)
is waited out and the whole batch written; a row no retry can cure (a value out
of range, too long, a NUL PostgreSQL refuses) fails the photo that brought it,
with a reason, and its batch-mates are written; a photo with any number of
keywords is written (in chunks); a batch is written in transactions of a
bounded number of rows."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import pytest
from sqlalchemy import event, func, select

from labelsd import records
from labelsd.records import Outcome, OutcomeKind, PhotoMeta, Prediction
from labelsd.store import workqueue
from labelsd.store.engine import open_store
from labelsd.store.schema import QueueItem, Tag

TABBY = [Prediction(1, "tabby", "n02123045", 281, 0.9), Prediction(2, "tiger cat", "n02123159", 282, 0.05),
         Prediction(3, "Egyptian cat", "n02124075", 285, 0.01)]


def classified(claim, n: int, **changes) -> Outcome:
    fields = {"sha256": hashlib.sha256(f"content {n}".encode()).hexdigest(), "size": 100 + n,
              "mtime_ns": 1_700_000_000_000_000_000 + n, "width": 64, "height": 48,
              "format": "JPEG", "model": "InceptionV3/test", "predictions": list(TABBY)}
    return Outcome(claim, OutcomeKind.CLASSIFIED, **{**fields, **changes})


def claims_for(store, names) -> list:
    workqueue.enqueue(store, [records.FileFacts(f"/photos/{name}") for name in names])
    by_path = {c.path: c for c in workqueue.claim(store, "test-node", limit=len(names))}
    return [by_path[f"/photos/{name}"] for name in names]


def commit_within(store, outcomes, seconds: float = 30):
    """commit_outcomes, abandoned after `seconds` (the code before the fix retried a
    bad row for ever)."""
    from labelsd.pipeline.writer import commit_outcomes

    abandon = threading.Event()
    timer = threading.Timer(seconds, abandon.set)
    timer.start()
    try:
        return commit_outcomes(store, "test-node", outcomes, abandon)
    finally:
        timer.cancel()
        assert not abandon.is_set(), "the writer was still retrying when the test gave up"


def queue_rows(store) -> dict[str, tuple]:
    with store.read() as session:
        return {row.path: (row.state, row.last_error) for row in session.execute(
            select(QueueItem.path, QueueItem.state, QueueItem.last_error))}


# ---- bad rows ------------------------------------------------------------------------------------


BAD_ROWS = {
    "mtime past 2262 (BIGINT)": {"mtime_ns": 10**19},
}
PG_ONLY_BAD_ROWS = {  # SQLite stores these; PostgreSQL refuses them
    "camera over its width": {"meta": PhotoMeta(camera="x" * 300)},
    "NUL in a keyword": {"meta": PhotoMeta(keywords=("a\x00b",))},
}


@pytest.mark.parametrize("bad", [*BAD_ROWS, *PG_ONLY_BAD_ROWS])
def test_a_bad_row_fails_its_photo_and_its_batch_mates_are_written(store, bad):
    change = {**BAD_ROWS, **PG_ONLY_BAD_ROWS}[bad]
    claims = claims_for(store, ["a.jpg", "bad.jpg", "c.jpg"])
    outcomes = [classified(claims[0], 0), classified(claims[1], 1, **change), classified(claims[2], 2)]
    refused = bad in BAD_ROWS or store.dialect == "postgresql"

    written = commit_within(store, outcomes)

    assert [store.record(p).status for p in ("/photos/a.jpg", "/photos/c.jpg")] == ["done", "done"]
    rec = store.record("/photos/bad.jpg")
    if not refused:
        assert rec.status == "done"
        return
    assert rec.status == "failed" and rec.error.startswith("cannot store its result:"), rec
    assert queue_rows(store)["/photos/bad.jpg"][0] == "failed"
    assert [o.kind for o in written] == [OutcomeKind.CLASSIFIED, OutcomeKind.RETRY, OutcomeKind.CLASSIFIED]
    assert written[1].error == rec.error


def test_a_failed_bad_row_can_be_queued_again(store):
    claims = claims_for(store, ["bad.jpg"])
    commit_within(store, [classified(claims[0], 1, mtime_ns=10**19)])
    assert store.record("/photos/bad.jpg").status == "failed"
    assert workqueue.retry_failed(store) == 1  # `labels retry`
    assert store.record("/photos/bad.jpg").status == "pending"


# ---- outages -------------------------------------------------------------------------------------


@pytest.fixture
def short_lock_store(db_url, monkeypatch):
    """A store whose lock waits end after a fraction of a second (an outage that the
    writer's back-off must wait out), and a way to hold the database's lock."""
    from labelsd.store import connect

    if "://" in db_url:
        store = open_store(db_url + "&options=-c%20lock_timeout%3D200")
    else:
        monkeypatch.setattr(connect, "SQLITE_BUSY_TIMEOUT_S", 1)
        store = open_store(db_url)
    yield store
    store.close()


def hold_lock(store, db_url, seconds: float) -> threading.Thread:
    """Another client holding the write lock (SQLite) or the queue table (PostgreSQL)."""
    taken = threading.Event()

    def hold():
        if "://" in db_url:
            import psycopg

            with psycopg.connect(store.engine.url.render_as_string(hide_password=False)
                                 .replace("postgresql+psycopg", "postgresql").split("&options")[0]) as conn:
                conn.execute("LOCK TABLE queue IN ACCESS EXCLUSIVE MODE")
                taken.set()
                time.sleep(seconds)  # the outage itself, not a wait for a condition
        else:
            conn = sqlite3.connect(db_url, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            taken.set()
            time.sleep(seconds)
            conn.execute("COMMIT")
            conn.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(10)
    return holder


def test_an_outage_keeps_the_whole_batch_and_writes_it_once_the_database_answers(short_lock_store, db_url):
    store = short_lock_store
    claims = claims_for(store, ["a.jpg", "b.jpg", "c.jpg"])
    outcomes = [classified(c, n) for n, c in enumerate(claims)]
    holder = hold_lock(store, db_url, 3.0)
    started = time.monotonic()

    written = commit_within(store, outcomes)

    assert time.monotonic() - started > 2  # it waited the outage out ...
    holder.join(10)
    assert written == outcomes  # ... and wrote every photo, failing none
    assert [store.record(f"/photos/{n}").status for n in ("a.jpg", "b.jpg", "c.jpg")] == ["done"] * 3
    assert queue_rows(store) == {}


# ---- chunks --------------------------------------------------------------------------------------


def test_a_photo_with_sixty_thousand_keywords_is_written(store):
    """One multi-row INSERT of 60,000 tags was 300,000 bound values: over SQLite's
    limit (too many SQL variables) and PostgreSQL's (65,535)."""
    claims = claims_for(store, ["bomb.png", "next.jpg"])
    words = tuple(f"keyword {i}" for i in range(60_000))
    outcomes = [classified(claims[0], 0, meta=PhotoMeta(keywords=words)), classified(claims[1], 1)]
    written = commit_within(store, outcomes)
    assert [o.kind for o in written] == [OutcomeKind.CLASSIFIED] * 2
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Tag)) == 60_000
    assert store.record("/photos/next.jpg").status == "done"


def test_a_batch_is_written_in_transactions_of_bounded_rows(store):
    from labelsd.pipeline import writer

    claims = claims_for(store, [f"p{n}.jpg" for n in range(8)])
    words = tuple(f"word {i}" for i in range(250))
    outcomes = [classified(c, n, meta=PhotoMeta(keywords=words)) for n, c in enumerate(claims)]
    commits = []

    def count(_conn):
        commits.append(1)

    event.listen(store.engine, "commit", count)
    try:
        written = commit_within(store, outcomes)
    finally:
        event.remove(store.engine, "commit", count)
    assert len(written) == 8 and all(o.kind == OutcomeKind.CLASSIFIED for o in written)
    assert 1 < len(commits) < 8  # several photos to a transaction, never all 2,000 rows in one
    assert writer.ROWS_PER_TRANSACTION >= 256 + len(TABBY) + 3  # a photo at the keyword cap fits in one


def test_the_driver_tells_an_outage_from_a_statement_no_retry_can_cure(tmp_path):
    from labelsd.store.faults import cannot_succeed

    path = str(tmp_path / "x.db")
    holder, other = sqlite3.connect(path, isolation_level=None), sqlite3.connect(path, timeout=0)
    holder.execute("CREATE TABLE t (a)")
    other.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 10)
    holder.execute("BEGIN IMMEDIATE")
    errors = {}
    for name, sql, params in [("locked", "INSERT INTO t VALUES (1)", ()),
                              ("too many variables", "SELECT " + ",".join("?" * 11), (1,) * 11),
                              ("no such table", "SELECT * FROM nowhere", ())]:
        try:
            other.execute(sql, params)
        except sqlite3.Error as err:
            errors[name] = err
    holder.execute("ROLLBACK")
    assert {name: cannot_succeed(err) for name, err in errors.items()} == {
        "locked": False, "too many variables": True, "no such table": True}
