"""A fleet on one database: batched writes (a batch costs a few statements whatever
its size), status without full counts, one walker per shared root, wake-ups, and
the metrics listener. Store tests run on SQLite and PostgreSQL (`db_url` is
parametrized in conftest); the ones named *_pg need PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import event, func, select

from imagegen import make_image
from labelsd import records
from labelsd.records import FileFacts, OutcomeKind
from labelsd.records import Prediction as PredictionRecord
from labelsd.store import contents, counters, workqueue
from labelsd.store.engine import open_store
from labelsd.store.schema import Content, Prediction, QueueItem, TrackedPath
from servicekit import wait_for

TOP3 = [PredictionRecord(1, "tabby", "n02123045", 281, 0.7),
        PredictionRecord(2, "tiger cat", "n02123159", 282, 0.2),
        PredictionRecord(3, "Egyptian cat", "n02124075", 285, 0.1)]


def _classified(claim: records.Claim, sha: str | None = None) -> records.Outcome:
    sha = sha or hashlib.sha256(claim.path.encode()).hexdigest()
    return records.Outcome(claim, OutcomeKind.CLASSIFIED, sha256=sha, size=10, mtime_ns=1,
                           width=4, height=3, format="JPEG", model="test", predictions=TOP3)


def _facts(tmp_path, n: int, start: int = 0) -> list[FileFacts]:
    return [FileFacts(str(tmp_path / "inbox" / f"img_{i:05d}.jpg"), 100 + i, i)
            for i in range(start, start + n)]


@contextmanager
def _statements(store):
    """Count the statements sent to the database (an executemany counts once)."""
    sent: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _executemany):
        sent.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(store.engine, "before_cursor_execute", count)


def _record_statements(store, tmp_path, n: int, start: int) -> int:
    workqueue.enqueue(store, _facts(tmp_path, n, start))
    claims = workqueue.claim(store, "node-a", n)
    assert len(claims) == n
    with _statements(store) as sent:
        contents.record_outcomes(store, "node-a", [_classified(c) for c in claims])
    return len(sent)


# ---- batched writes ---------------------------------------------------------------


def test_recording_a_batch_costs_the_same_statements_whatever_its_size(store, tmp_path):
    small = _record_statements(store, tmp_path, 4, 0)
    large = _record_statements(store, tmp_path, 150, 100)
    assert large == small, (small, large)
    assert large <= 12, large
    assert store.counts() == {"pending": 0, "done": 154, "failed": 0, "missing": 0}
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 154 * 3
        assert session.scalar(select(func.count()).select_from(QueueItem)) == 0


def test_enqueueing_a_burst_costs_the_same_statements_whatever_its_size(store, tmp_path):
    with _statements(store) as sent:
        workqueue.enqueue(store, _facts(tmp_path, 3))
    small = len(sent)
    with _statements(store) as sent:
        assert workqueue.enqueue(store, _facts(tmp_path, 400, 10)) == 400
    assert len(sent) == small, (small, len(sent))
    assert store.counts()["pending"] == 403


def test_a_batch_with_mixed_outcomes_is_stored_as_one_by_one_would(store, tmp_path):
    """Classified, a copy linked to it, a copy in the same batch, a bad image, a
    retry, a vanished file and a content that failed before and is now classified."""
    facts = _facts(tmp_path, 7)
    workqueue.enqueue(store, facts[:1])
    [first] = workqueue.claim(store, "n", 1)
    failed_before = hashlib.sha256(b"once broken").hexdigest()
    contents.record_outcomes(store, "n", [records.Outcome(
        first, OutcomeKind.BAD_IMAGE, sha256=failed_before, size=5, error="truncated JPEG")])
    assert store.record(facts[0].path).status == "failed"

    workqueue.enqueue(store, facts, force=True)
    claims = {c.path: c for c in workqueue.claim(store, "n", 10)}
    c = [claims[f.path] for f in facts]
    shared = hashlib.sha256(b"shared bytes").hexdigest()
    outcomes = [
        _classified(c[0], failed_before),            # failed before, classified now
        _classified(c[1], shared),
        _classified(c[2], shared),                    # the same bytes in the same batch
        records.Outcome(c[3], OutcomeKind.BAD_IMAGE, sha256=hashlib.sha256(b"bad").hexdigest(),
                        size=3, error="not an image"),
        records.Outcome(c[4], OutcomeKind.RETRY, error="busy"),
        records.Outcome(c[5], OutcomeKind.VANISHED),
        records.Outcome(c[6], OutcomeKind.LINKED, sha256=shared, size=10, mtime_ns=1,
                        width=4, height=3, format="JPEG"),
    ]
    contents.record_outcomes(store, "n", outcomes)
    status = {f.path: store.record(f.path) for f in facts}
    assert status[facts[0].path].status == "done"
    assert [p.label for p in status[facts[0].path].labels] == ["tabby", "tiger cat", "Egyptian cat"]
    assert status[facts[1].path].sha256 == status[facts[2].path].sha256 == shared
    assert status[facts[6].path].status == "done" and status[facts[6].path].sha256 == shared
    assert (status[facts[3].path].status, status[facts[3].path].error) == ("failed", "not an image")
    assert status[facts[4].path].status == "pending"
    assert status[facts[5].path] is None  # never read: forgotten
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)
                              .where(Prediction.sha256 == shared)) == 3
        assert session.scalar(select(func.count()).select_from(Prediction)
                              .where(Prediction.sha256 == failed_before)) == 3
        assert session.scalar(select(Content.error).where(Content.sha256 == failed_before)) is None
        left = session.execute(select(QueueItem.path, QueueItem.claimed_by)).all()
    assert [(p, by) for p, by in left] == [(facts[4].path, None)]


def test_a_value_too_long_fails_the_batch_through_the_error_boundary_not_truncated_pg(
        pg_url, tmp_path):
    """The batch statements run through the driver on PostgreSQL: a value longer than
    its column comes out as StoreRejected (no retry cures it: the writer fails that
    photo alone, issue 31), the transaction is rolled back whole, and the value is
    refused, never cut to fit (an explicit cast to VARCHAR(64)[] would)."""
    from labelsd.errors import StoreRejected

    with open_store(pg_url) as store:
        workqueue.enqueue(store, _facts(tmp_path, 3))
        claims = workqueue.claim(store, "n", 3)
        outcomes = [_classified(c) for c in claims]
        outcomes[1].sha256 = "f" * 70
        with pytest.raises(StoreRejected, match="too long"):
            contents.record_outcomes(store, "n", outcomes)
        assert store.counts() == {"pending": 3, "done": 0, "failed": 0, "missing": 0}
        contents.record_outcomes(store, "n", [_classified(c) for c in claims])
        assert store.counts() == {"pending": 0, "done": 3, "failed": 0, "missing": 0}


def test_a_connection_lost_mid_batch_is_store_unavailable_and_the_retry_records_it_pg(
        pg_url, tmp_path, monkeypatch):
    """The batch's statements run on the driver's connection: its loss in the
    middle of a batch reaches the writer as StoreUnavailable (which it retries),
    and the retry goes through on a fresh connection (the pool's pre-ping)."""
    import psycopg

    from labelsd.errors import StoreUnavailable

    with open_store(pg_url) as store, psycopg.connect(
            store.engine.url.render_as_string(hide_password=False).replace("+psycopg", ""),
            autocommit=True) as killer:
        workqueue.enqueue(store, _facts(tmp_path, 5))
        claims = workqueue.claim(store, "n", 5)
        real = contents._lookups

        def lose_the_connection(session, *args):
            session.connection()  # the batch's transaction has its connection
            killer.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return real(session, *args)

        monkeypatch.setattr(contents, "_lookups", lose_the_connection)
        with pytest.raises(StoreUnavailable):
            contents.record_outcomes(store, "n", [_classified(c) for c in claims])
        monkeypatch.setattr(contents, "_lookups", real)
        contents.record_outcomes(store, "n", [_classified(c) for c in claims])
        assert store.counts() == {"pending": 0, "done": 5, "failed": 0, "missing": 0}


def test_a_path_queued_again_while_read_is_released_not_deleted(store, tmp_path):
    facts = _facts(tmp_path, 3)
    workqueue.enqueue(store, facts)
    claims = workqueue.claim(store, "n", 3)
    workqueue.enqueue(store, [FileFacts(facts[1].path, 999, 999)])  # changed while being read
    contents.record_outcomes(store, "n", [_classified(c) for c in claims])
    with store.read() as session:
        left = session.execute(select(QueueItem.path, QueueItem.claimed_by)).all()
        tracked = session.scalar(select(func.count()).select_from(TrackedPath))
    assert [(p, by) for p, by in left] == [(facts[1].path, None)]
    assert tracked == 3


def test_unchanged_files_are_skipped_and_a_missing_one_comes_back(store, tmp_path):
    facts = _facts(tmp_path, 3)
    workqueue.enqueue(store, facts)
    contents.record_outcomes(store, "n", [
        records.Outcome(c, OutcomeKind.CLASSIFIED, sha256=hashlib.sha256(c.path.encode()).hexdigest(),
                        size=next(f.size for f in facts if f.path == c.path),
                        mtime_ns=next(f.mtime_ns for f in facts if f.path == c.path),
                        model="test", predictions=TOP3)
        for c in workqueue.claim(store, "n", 3)])
    contents.mark_missing(store, [facts[0].path])
    replaced = FileFacts(facts[2].path, 5, 5)
    assert workqueue.enqueue(store, [facts[0], facts[1], replaced]) == 1
    assert store.record(facts[0].path).status == "done"
    assert store.record(facts[2].path).status == "pending"


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_batches(store, tmp_path, n):
    workqueue.enqueue(store, _facts(tmp_path, n))
    contents.record_outcomes(store, "n", [_classified(c) for c in workqueue.claim(store, "n", 5)])
    assert store.counts()["done"] == n


# ---- wake-ups (PostgreSQL LISTEN/NOTIFY) ---------------------------------------------


class StandInClassifier:
    """Where the model would be: a fixed top-3 per image, no TensorFlow."""

    name = "stand-in"
    device = "cpu"
    batch_size = 8
    ladder = None  # no padded sizes

    def decode(self, data):
        from labelsd.model.decode import decode_for_inception

        return decode_for_inception(data)

    def classify(self, batch):
        """Each image's top-3, and no embeddings (a model without them)."""
        return [list(TOP3) for _ in range(len(batch))], None


def test_an_idle_node_hears_work_queued_by_another_once_per_transaction_pg(pg_url, tmp_path):
    from labelsd.store.wakeups import start_listener

    with open_store(pg_url) as idle, open_store(pg_url, migrate=False) as other:
        woken = threading.Event()
        listener = start_listener(idle, woken.set)
        try:
            assert listener.wait_listening(30)
            workqueue.enqueue(other, _facts(tmp_path, 300))  # one transaction, 300 rows
            assert woken.wait(30), "the idle node was not woken"
            workqueue.enqueue(other, _facts(tmp_path, 1, 1000))  # a second transaction
            wait_for(lambda: listener.heard >= 2, 30, "the second notification")
            time.sleep(0.3)  # a third notification, if one were sent per row, would be here by now
            assert listener.heard == 2
        finally:
            listener.stop()
        assert not any(t.name == "labelsd-queue-listener" for t in threading.enumerate())


def test_listener_is_postgresql_only(store):
    from labelsd.store.wakeups import start_listener

    listener = start_listener(store, lambda: None)
    assert (listener is None) == (store.dialect == "sqlite")
    if listener is not None:
        listener.stop()


def test_an_idle_pipeline_starts_on_another_nodes_work_without_polling_pg(pg_url, tmp_path):
    """The pipeline polls only every 120 s here: only the NOTIFY can start it in time."""
    from labelsd.pipeline.runner import Pipeline

    (tmp_path / "inbox").mkdir()
    images = [make_image(tmp_path / "inbox" / f"p{i}.jpg", seed=i) for i in range(3)]
    with open_store(pg_url) as node_store, open_store(pg_url, migrate=False) as other:
        with Pipeline(node_store, StandInClassifier(), "idle-node", idle_wait_s=120,
                      decode_workers=1) as pipe:
            assert pipe.wait_idle(30)
            assert pipe._claims._listener.wait_listening(30)
            workqueue.enqueue(other, [str(p) for p in images])
            wait_for(lambda: pipe.done == 3, 60, "the idle node to label the other node's work")
        assert other.counts()["done"] == 3


def test_a_claim_walks_the_queued_index_in_order_before_statistics_catch_up_pg(pg_url, tmp_path):
    """Right after a burst (a walk queued thousands of files; autovacuum has not
    analyzed the queue yet) the planner believes a handful of rows are queued:
    a claim must still walk the partial index in id order and stop at its limit,
    not read and sort every queued row (85 ms a claim at 200,000 rows)."""
    plans: list[str] = []
    with open_store(pg_url) as store:
        facts = _facts(tmp_path, 20_000)
        for start in range(0, len(facts), 5000):
            workqueue.enqueue(store, facts[start:start + 5000])

        def explain_everything(dbapi_conn, _record) -> None:
            dbapi_conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
            try:
                dbapi_conn.execute("LOAD 'auto_explain'")
            except Exception:  # noqa: BLE001 - contrib module not installed
                dbapi_conn.rollback()
                return
            for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_analyze = on",
                            "client_min_messages = log"):
                dbapi_conn.execute(f"SET {setting}")
            dbapi_conn.commit()

        event.listen(store.engine, "connect", explain_everything)
        store.engine.dispose()  # new connections, each explaining its statements
        claims = workqueue.claim(store, "node-a", 32)
    assert [c.id for c in claims] == sorted(c.id for c in claims) and len(claims) == 32
    claim_plans = [p for p in plans if "FOR UPDATE SKIP LOCKED" in p]
    if not plans:
        pytest.skip("auto_explain is not installed with this PostgreSQL")
    assert len(claim_plans) == 1, plans
    assert "Index Scan using ix_queue_queued" in claim_plans[0], claim_plans[0]
    assert "Sort" not in claim_plans[0] and "Bitmap" not in claim_plans[0], claim_plans[0]


# ---- status without full counts ------------------------------------------------------


def test_status_counts_from_counters_match_a_full_count_through_a_librarys_life(store, tmp_path,
                                                                             monkeypatch):
    from labelsd.store.counters import status_counts

    def same():
        assert status_counts(store) == store.counts()
        assert workqueue.queue_depth(store) == _queued_rows(store)

    facts = _facts(tmp_path, 12)
    paths = [f.path for f in facts]
    same()
    workqueue.enqueue(store, facts)
    same()
    claims = workqueue.claim(store, "n", 8)
    same()
    shared = hashlib.sha256(b"copy").hexdigest()
    contents.record_outcomes(store, "n", [
        _classified(claims[0]), _classified(claims[1], shared), _classified(claims[2], shared),
        records.Outcome(claims[3], OutcomeKind.BAD_IMAGE, sha256=hashlib.sha256(b"x").hexdigest(),
                        size=1, error="not an image"),
        records.Outcome(claims[4], OutcomeKind.VANISHED),
        records.Outcome(claims[5], OutcomeKind.RETRY, error="busy")])
    same()
    monkeypatch.setattr(workqueue, "MAX_ATTEMPTS", 1)
    contents.record_outcomes(store, "n", [records.Outcome(claims[6], OutcomeKind.RETRY, error="gone bad")])
    same()
    contents.mark_missing(store, [paths[0], paths[1], paths[9]])
    same()
    workqueue.enqueue(store, [facts[0]])  # back, but not the file that was read there: pending
    same()
    contents.move_path(store, paths[2], str(tmp_path / "inbox" / "moved.jpg"))
    same()
    assert workqueue.retry_failed(store) == 2
    same()
    workqueue.release_claims(store, "n")
    contents.record_outcomes(store, "n", [_classified(c) for c in workqueue.claim(store, "n", 50)])
    same()
    assert store.counts()["done"] >= 6


def _queued_rows(store) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(QueueItem)
                              .where(QueueItem.state == "queued"))


def test_counters_stay_exact_under_concurrent_nodes_pg(pg_url, tmp_path):
    """Eight nodes enqueueing and recording at once (each its own pool): the
    sharded counters add up to the full count."""
    from labelsd.store.counters import status_counts

    with open_store(pg_url) as store:
        def node(i: int) -> None:
            with open_store(pg_url, migrate=False) as own:
                workqueue.enqueue(own, _facts(tmp_path, 50, i * 50))
                while claims := workqueue.claim(own, f"node-{i}", 7):
                    contents.record_outcomes(own, f"node-{i}", [_classified(c) for c in claims])

        threads = [threading.Thread(target=node, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert store.counts() == {"pending": 0, "done": 400, "failed": 0, "missing": 0}
        assert status_counts(store) == store.counts()
        assert counters.shards(store) >= 2  # the writes spread over shards, not one hot row


# ---- metrics ---------------------------------------------------------------------------


def _scrape(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_endpoint_counts_what_the_pipeline_reports(store, tmp_path):
    from labelsd.events import Events
    from labelsd.metrics import start_metrics

    events = Events()
    metrics = start_metrics("127.0.0.1:0", events, store)
    try:
        port = metrics._server.server_address[1]
        workqueue.enqueue(store, _facts(tmp_path, 5))
        claims = workqueue.claim(store, "n", 3)
        outcomes = [_classified(claims[0]),
                    records.Outcome(claims[1], OutcomeKind.LINKED, sha256="a" * 64),
                    records.Outcome(claims[2], OutcomeKind.BAD_IMAGE, sha256="b" * 64, error="x"),
                    records.Outcome(records.Claim(-1, "/x.jpg", claims[0].enqueued_at, 0, embed_only="c" * 64),
                                    OutcomeKind.EMBEDDED, sha256="c" * 64, embedding=b"\0" * 256)]
        events.emit("batch_written", outcomes)
        events.emit("model_ran", 1, 0.25)
        events.emit("model_ran", 1, 0.5)
        events.emit("db_wrote", 3, 0.02)
        events.emit("image_decoded", 0.004)
        got = _scrape(port)
    finally:
        metrics.stop()
        metrics.stop()  # twice is fine
    assert got['labelsd_images_total{outcome="labelled"}'] == 1
    assert got['labelsd_images_total{outcome="linked"}'] == 1
    assert got['labelsd_images_total{outcome="failed"}'] == 1
    assert got['labelsd_images_total{outcome="retried"}'] == 0
    assert got['labelsd_images_total{outcome="embedded"}'] == 1  # the backfill's
    assert got["labelsd_queue_depth"] == 5
    assert got["labelsd_batch_size_count"] == 1 and got["labelsd_batch_size_sum"] == 4
    assert got["labelsd_model_busy_seconds_total"] == 0.75
    assert got["labelsd_model_batch_seconds_count"] == 2
    assert got["labelsd_db_write_seconds_count"] == 1
    assert got["labelsd_decode_seconds_count"] == 1


@pytest.mark.parametrize("bad", ["9464", "host:", "host:port", "1.2.3.4:70000"])
def test_metrics_address_must_be_host_and_port(bad):
    from labelsd.errors import ConfigError
    from labelsd.metrics import parse_address

    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address(bad)


def test_prometheus_client_is_imported_only_with_metrics(tmp_path):
    code = ("import sys, labelsd.service, labelsd.pipeline.runner, labels_cli.app; "
            "sys.exit('prometheus_client' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_metrics_flag_reaches_the_settings(tmp_path):
    from labelsd.service import build_parser, settings_from_args

    args = build_parser().parse_args(["--watch", str(tmp_path), "--metrics", "127.0.0.1:9464"])
    assert settings_from_args(args).metrics == "127.0.0.1:9464"


# ---- one walker per shared root --------------------------------------------------------


def _register(store, *names, monkeypatch=None):
    """Register live nodes; with `monkeypatch`, they stay alive without heartbeats
    for the test's length (a loaded machine may take longer than ALIVE_WITHIN_S)."""
    from labelsd.store import nodes

    if monkeypatch is not None:
        monkeypatch.setattr(nodes, "ALIVE_WITHIN_S", 600.0)
    for name in names:
        nodes.register(store, name, model="m", device="cpu", watching=[])


def test_walk_lease_one_walker_then_the_others_skip_while_it_lives(store, tmp_path, monkeypatch):
    from labelsd.store import nodes, walks

    root = str(tmp_path / "share")
    _register(store, "a", "b", "c", monkeypatch=monkeypatch)
    assert walks.take(store, root, "a") == walks.MINE
    assert walks.take(store, root, "b") == walks.BUSY
    assert walks.take(store, root, "a") == walks.MINE  # its own lease, again
    walks.release(store, root, "a", completed=True)
    assert walks.take(store, root, "b") == walks.COVERED
    nodes.mark_stopped(store, "a")  # the walker is gone: its watch no longer covers the root
    assert walks.take(store, root, "b") == walks.MINE
    walks.release(store, root, "b", completed=False)  # stopped half-way: covers nothing
    assert walks.take(store, root, "c") == walks.MINE


def test_a_dead_walkers_lease_runs_out_and_is_taken_over(store, tmp_path):
    from labelsd.store import walks

    root = str(tmp_path / "share")
    _register(store, "dead", "live")
    assert walks.take(store, root, "dead", lease_s=0.3) == walks.MINE
    assert walks.take(store, root, "live") == walks.BUSY
    wait_for(lambda: walks.take(store, root, "live") == walks.MINE, 30, "the lease to run out")


def test_a_lease_held_by_a_node_marked_stopped_is_taken_at_once(store, tmp_path):
    """kill -9, then a restart on the same host: the restart marks the dead node
    stopped (liveness.take_over_dead_nodes) and need not wait for its leases to run out."""
    from labelsd.store import nodes, walks

    root = str(tmp_path / "share")
    _register(store, "killed", "restarted")
    assert walks.take(store, root, "killed", lease_s=600) == walks.MINE
    assert walks.take(store, root, "restarted") == walks.BUSY
    nodes.mark_stopped(store, "killed")
    assert walks.take(store, root, "restarted") == walks.MINE
    assert walks.take(store, root, "killed") == walks.BUSY


def test_nodes_starting_together_walk_a_shared_root_once(store, tmp_path, monkeypatch):
    from labelsd.store.walks import WalkLeases

    root = str(tmp_path / "share")
    names = [f"node-{i}" for i in range(4)]
    _register(store, *names, monkeypatch=monkeypatch)
    walked: list[str] = []
    stop = threading.Event()
    first_in = threading.Event()
    let_go = threading.Event()

    def reconcile_as(name):
        def reconcile(_root):
            walked.append(name)
            first_in.set()
            assert let_go.wait(30)
            return True
        return reconcile

    threads = [threading.Thread(target=WalkLeases(store, n, wait_s=0.05).walk,
                                args=(root, stop, reconcile_as(n))) for n in names]
    for t in threads:
        t.start()
    assert first_in.wait(30)
    time.sleep(0.3)  # the others are waiting on the lease meanwhile (and must not walk)
    let_go.set()
    for t in threads:
        t.join(30)
    assert len(walked) == 1, walked


def test_two_watchers_on_one_share_walk_it_once_and_queue_each_file_once(store, tmp_path, caplog,
                                                                         monkeypatch):
    import logging

    from labelsd.store.walks import WalkLeases
    from labelsd.watch.watcher import Watcher

    share = tmp_path / "share"
    share.mkdir()
    old = time.time() - 3600  # settled long ago: queued by the walk at once
    for i in range(20):
        path = make_image(share / f"photo_{i}.jpg", seed=i)
        os.utime(path, (old, old))
    _register(store, "a", "b", monkeypatch=monkeypatch)
    caplog.set_level(logging.INFO, logger="labelsd")
    watchers = [Watcher(store, [str(share)], on_enqueued=lambda: None,
                        walk_leases=WalkLeases(store, n, wait_s=0.05)) for n in ("a", "b")]
    try:
        for w in watchers:
            w.start()
        wait_for(lambda: workqueue.queue_depth(store) == 20, 60, "the share to be queued")
        wait_for(lambda: "was walked by another live node" in caplog.text, 60, "the second to skip")
    finally:
        for w in watchers:
            w.stop()
    assert caplog.text.count("scanned ") == 1, caplog.text


def _polling_watcher(store, share, name: str):
    from labelsd.store.walks import WalkLeases
    from labelsd.watch.watcher import Watcher

    return Watcher(store, [str(share)], on_enqueued=lambda: None, poll=True, settle_s=0.3,
                   root_check_s=0.2, walk_leases=WalkLeases(store, name, wait_s=0.05))


def _polls(watcher) -> bool:
    """Whether this node snapshots the share (its polling observer was ever started)."""
    return watcher._watches._polling is not None


def test_with_poll_only_the_lease_holder_polls_a_share_and_another_takes_over_when_it_stops(
        store, tmp_path, monkeypatch):
    from labelsd.watch import shared

    monkeypatch.setattr(shared, "POLL_LEASE_S", 3.0)
    share = tmp_path / "share"
    share.mkdir()
    _register(store, "a", "b", monkeypatch=monkeypatch)
    a, b = _polling_watcher(store, share, "a"), _polling_watcher(store, share, "b")
    try:
        a.start()
        b.start()
        make_image(share / "first.jpg", seed=1)
        wait_for(lambda: workqueue.queue_depth(store) == 1, 60, "the holder to poll the new file")
        time.sleep(0.5)  # b's root checks run meanwhile (every 0.2 s): it must not start polling
        assert _polls(a) and not _polls(b)
        a.stop()  # hands its poll lease back: b takes it at its next root check
        wait_for(lambda: _polls(b), 30, "the other node to take over polling")
        make_image(share / "second.jpg", seed=2)
        wait_for(lambda: workqueue.queue_depth(store) == 2, 60, "the new poller to queue a file")
    finally:
        a.stop()
        b.stop()


def test_a_dead_pollers_lease_runs_out_and_the_next_node_polls_and_rescans(store, tmp_path,
                                                                          monkeypatch, caplog):
    import logging

    from labelsd.store import walks
    from labelsd.watch import shared

    monkeypatch.setattr(shared, "POLL_LEASE_S", 3.0)
    share = tmp_path / "share"
    share.mkdir()
    _register(store, "b", monkeypatch=monkeypatch)
    caplog.set_level(logging.INFO, logger="labelsd")
    # A node that took the lease and died: it never renews it, never hands it back.
    assert walks.take(store, shared.lease_key(str(share)), "dead", lease_s=3.0) == walks.MINE
    b = _polling_watcher(store, share, "b")
    try:
        b.start()
        wait_for(lambda: "scanned " in caplog.text, 60, "the start-up walk")
        assert not _polls(b)
        old = time.time() - 3600
        os.utime(make_image(share / "while_nobody_polled.jpg", seed=3), (old, old))
        wait_for(lambda: _polls(b), 30, "the dead node's lease to run out and be taken over")
        # Polling's first snapshot already holds that file: only the rescan queues it.
        wait_for(lambda: workqueue.queue_depth(store) == 1, 60, "the rescan at takeover")
        assert "took over polling" in caplog.text
    finally:
        b.stop()


# ---- a bounded pool per node -------------------------------------------------------------


def test_a_node_never_holds_more_connections_than_its_pool_bound_pg(pg_url):
    from sqlalchemy import text

    from labelsd.store.connect import POOL_OVERFLOW, POOL_SIZE

    with open_store(pg_url) as node, open_store(pg_url, migrate=False) as observer:
        database = node.engine.url.database
        peak = 0
        start = threading.Barrier(20)

        def busy() -> None:
            start.wait(30)
            with node.read() as session:
                session.execute(text("SELECT pg_sleep(0.2)"))

        threads = [threading.Thread(target=busy) for _ in range(20)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            with observer.read() as session:
                n = session.scalar(text("SELECT count(*) FROM pg_stat_activity "
                                        "WHERE datname = :db AND query LIKE 'SELECT pg_sleep%'"),
                                   {"db": database})
            peak = max(peak, n)
            time.sleep(0.02)
        for t in threads:
            t.join()
    assert 1 < peak <= POOL_SIZE + POOL_OVERFLOW, peak


def test_service_serves_metrics_of_what_it_labels(tmp_path, weights_file):
    """The real labelsd with --metrics: a labelled image shows on the endpoint."""
    import socket

    from servicekit import Service

    with socket.socket() as probe:  # a free port (the service must be told one)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    svc = Service(tmp_path, db=tmp_path / "labels.db", weights=weights_file, watch=[inbox],
                  args=["--metrics", f"127.0.0.1:{port}"])
    svc.start()
    try:
        svc.wait_ready()
        make_image(tmp_path / "photo.jpg", seed=3).rename(inbox / "photo.jpg")
        got = wait_for(lambda: (lambda m: m if m['labelsd_images_total{outcome="labelled"}'] == 1
                                else None)(_scrape(port)), 120, "the image in the metrics")
        assert got["labelsd_model_batch_seconds_count"] >= 1
        assert got["labelsd_decode_seconds_count"] >= 1
        assert got["labelsd_db_write_seconds_count"] >= 1
        assert got["labelsd_queue_depth"] == 0
    finally:
        assert svc.stop() == 0, svc.tail()


def test_status_counts_read_no_table_whole(tmp_path):
    """Every statement of status_counts walks an index (a partial one for the work
    outstanding), never a whole table: SQLite's plan says so, for a library that
    was never ANALYZEd (labelsd does not run ANALYZE)."""
    from labelsd.store.counters import status_counts

    with open_store(str(tmp_path / "labels.db")) as store:
        workqueue.enqueue(store, _facts(tmp_path, 600))
        while claims := workqueue.claim(store, "n", 100):
            contents.record_outcomes(store, "n", [_classified(c) for c in claims])
        sent: list[tuple[str, tuple]] = []
        event.listen(store.engine, "before_cursor_execute",
                     lambda _c, _cur, statement, params, _ctx, _many: sent.append((statement, params)))
        status_counts(store)
        plans = []
        with store.engine.connect() as conn:
            for statement, params in sent:
                if statement.lstrip().upper().startswith("SELECT"):
                    plans += [row[3] for row in conn.exec_driver_sql(
                        "EXPLAIN QUERY PLAN " + statement, params)]
    whole = [step for step in plans if step.startswith("SCAN") and "USING" not in step]
    assert plans and not whole, plans


# ---- the benchmark -------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_fleet_benchmark_quick_prints_every_figure(tmp_path, pg_server):
    """bench/fleet.py --quick runs end to end (no timing asserted: the goals are in
    its output, printed with the figures they replace)."""
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "fleet.py"
    proc = subprocess.run([sys.executable, str(bench), "--quick"], capture_output=True, text=True,
                          timeout=540, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for figure in ("(a) one node on sqlite:", "(a) one node on postgresql:",
                   "(a) round trips per image", "(b) claim latency", "(c) idle node picks up",
                   "(d) labels search cat", "(d) labels status", "(d) labels stats",
                   "(d) labels export", "(d') labels search cat", "(d') labels stats"):
        assert figure in proc.stdout, proc.stdout
    assert "was about 313" in proc.stdout and "was about 276" in proc.stdout


def test_labels_status_reads_the_counters_and_falls_back_on_an_old_library(store, tmp_path):
    """The query commands' read-only Reader counts as the store's full count does,
    through the counters; a library without them (never migrated to 4) is counted."""
    from sqlalchemy import text

    from labelsd.serve.reader import as_reader, open_reader

    workqueue.enqueue(store, _facts(tmp_path, 5))
    contents.record_outcomes(store, "n", [_classified(c) for c in workqueue.claim(store, "n", 3)])
    expected = store.counts()
    assert expected == {"pending": 2, "done": 3, "failed": 0, "missing": 0}
    reader = open_reader(store.db) if store.dialect == "sqlite" else as_reader(store)
    assert reader.counts() == expected
    with store.write() as session:  # the counters say otherwise: the Reader must be reading them
        session.execute(text("UPDATE counters SET n = n + 7 WHERE name = 'paths' AND shard = "
                             "(SELECT min(shard) FROM counters WHERE name = 'paths')"))
    assert reader.counts()["done"] == 10
    with store.write() as session:
        session.execute(text("DROP TABLE counters"))
    assert reader.counts() == expected


def test_a_walk_from_before_this_node_started_does_not_cover_it(store, tmp_path, monkeypatch):
    """A service killed with kill -9 and started again: the old node's walk (and its
    still-fresh heartbeat) must not stop the new node from walking for what landed
    while nothing watched."""
    from labelsd.store import walks

    root = str(tmp_path / "share")
    _register(store, "killed", monkeypatch=monkeypatch)
    assert walks.take(store, root, "killed") == walks.MINE
    walks.release(store, root, "killed", completed=True)
    _register(store, "restarted", monkeypatch=monkeypatch)
    assert walks.take(store, root, "restarted") == walks.MINE


# ---- the queries at a million images ------------------------------------------------------


def _sqlite_plans(store, call) -> list[tuple[str, list[str]]]:
    """Each SELECT that `call()` sends through the Store, with SQLite's plan steps
    for it (for a library never ANALYZEd: labelsd does not run ANALYZE)."""
    sent: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, params, _context, _executemany):
        sent.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    with store.engine.connect() as conn:
        return [(statement, [row[3] for row in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, params)])
                for statement, params in sent if statement.lstrip().upper().startswith("SELECT")]


def _library_of(store, tmp_path, n: int, missing_every: int = 7) -> list[str]:
    """n images, each its own content, first labels spread over a few cat classes;
    every `missing_every`-th one deleted."""
    cats = [PredictionRecord(1, "tabby", "n02123045", 281, 0.7),
            PredictionRecord(1, "Persian cat", "n02123394", 283, 0.6),
            PredictionRecord(1, "Siamese cat", "n02123597", 284, 0.5)]
    facts = _facts(tmp_path, n)
    workqueue.enqueue(store, facts)
    while claims := workqueue.claim(store, "n", 100):
        contents.record_outcomes(store, "n", [records.Outcome(
            c, OutcomeKind.CLASSIFIED, sha256=hashlib.sha256(c.path.encode()).hexdigest(),
            size=10, mtime_ns=1, width=4, height=3, format="JPEG", model="test",
            predictions=[cats[c.id % 3], *TOP3[1:]]) for c in claims])
    paths = [f.path for f in facts]
    contents.mark_missing(store, paths[::missing_every])
    return paths


def test_stats_counts_top_labels_from_indexes_alone(tmp_path):
    """`labels stats` at a million images: its top-labels count reads covering
    indexes only (first labels in content order, present paths by content),
    never a table's rows."""
    from labelsd.serve import query
    from labelsd.serve.reader import as_reader

    with open_store(str(tmp_path / "labels.db")) as store:
        _library_of(store, tmp_path, 300)
        plans = _sqlite_plans(store, lambda: query.stats(as_reader(store)))
    (top,) = [steps for statement, steps in plans if "GROUP BY r.label" in statement]
    reads = [step for step in top if step.startswith(("SCAN", "SEARCH"))]
    assert reads and all("COVERING INDEX" in step for step in reads), top


def test_search_reads_its_records_with_its_hits(tmp_path):
    """`labels search cat` at a million images: the hits' records come from the
    statement that finds the hits, not looked up again path by path."""
    from labelsd.serve import query
    from labelsd.serve.reader import as_reader

    with open_store(str(tmp_path / "labels.db")) as store:
        paths = _library_of(store, tmp_path, 600)
        found: list = []
        plans = _sqlite_plans(store, lambda: found.append(query.find(as_reader(store), "cat")))
        expected = store.records_for_paths(sorted(set(paths) - set(paths[::7])))
    assert sorted(r.to_dict()["path"] for r in found[0].records) == [r.path for r in expected]
    assert {r.path: r.to_dict() for r in found[0].records} == {r.path: r.to_dict() for r in expected}
    assert not [s for s, _ in plans if "p.path IN (" in s], "records looked up again by path"
    (hits,) = [steps for statement, steps in plans if "max(score) AS best" in statement]
    tables = {"p", "c", "q", "predictions"}  # the materialised best scores `b` are the hits
    assert not [step for step in hits if step.startswith("SCAN") and step.split()[1] in tables
                and "USING" not in step], hits


def test_search_finds_its_best_scores_in_an_index_alone(tmp_path):
    """`labels search cat` at a million images: the best matching score of each
    content comes from one covering index (class, score, content), not from a
    predictions row read per matching label (migration 6)."""
    from labelsd.serve import query
    from labelsd.serve.reader import as_reader

    with open_store(str(tmp_path / "labels.db")) as store:
        _library_of(store, tmp_path, 50)
        plans = _sqlite_plans(store, lambda: query.find(as_reader(store), "cat"))
    (hits,) = [steps for statement, steps in plans if "max(score) AS best" in statement]
    best = [step for step in hits if "predictions" in step and " l1 " not in step
            and " l2 " not in step and " l3 " not in step]
    assert best and all("COVERING INDEX" in step for step in best), hits


def test_search_counts_what_its_floor_hid_from_indexes_alone(tmp_path):
    """The count of label matches below the default floor (`labels search` says how
    many it hid) reads the (class, score, content) index and the paths' index, no
    table's rows: at a million images it costs about what the hits do."""
    from labelsd.serve import query
    from labelsd.serve.reader import as_reader

    with open_store(str(tmp_path / "labels.db")) as store:
        _library_of(store, tmp_path, 50)
        plans = _sqlite_plans(store, lambda: query.find(as_reader(store), "cat", min_score=0.55))
    (hidden,) = [steps for statement, steps in plans if "count(*)" in statement]
    reads = [step for step in hidden if step.split()[:1] in (["SCAN"], ["SEARCH"])
             and step.split()[1] in ("predictions", "p")]
    assert len(reads) == 2 and all("COVERING INDEX" in step for step in reads), hidden


def test_search_reads_a_hits_path_from_an_index_and_each_label_in_one_step(tmp_path):
    """`labels search cat` at a million images: each hit's present paths come from
    one index (content, missing, path) without a paths row, and each of its three
    labels from predictions' own key (stored clustered by content, migration 7),
    not an index entry and then a row."""
    from labelsd.serve import query
    from labelsd.serve.reader import as_reader

    with open_store(str(tmp_path / "labels.db")) as store:
        _library_of(store, tmp_path, 50)
        plans = _sqlite_plans(store, lambda: query.find(as_reader(store), "cat"))
    (hits,) = [steps for statement, steps in plans if "max(score) AS best" in statement]
    (path_step,) = [step for step in hits if step.startswith("SEARCH p ")]
    assert "COVERING INDEX ix_paths_sha256_missing" in path_step, hits
    label_steps = [step for step in hits if step.split()[:2] in (["SEARCH", f"l{k}"] for k in (1, 2, 3))]
    assert len(label_steps) == 3 and all("USING PRIMARY KEY" in s for s in label_steps), hits


def _first_labels_of_present_paths(store) -> list[tuple[str, int]]:
    """The reference: each present path's content's first label, counted in Python."""
    with store.read() as session:
        first = dict(session.execute(select(Prediction.sha256, Prediction.label)
                                     .where(Prediction.rank == 1)).all())
        shas = session.scalars(select(TrackedPath.sha256)
                               .where(TrackedPath.missing.is_(False))).all()
    counted: dict[str, int] = {}
    for sha in shas:
        if sha in first:
            counted[first[sha]] = counted.get(first[sha], 0) + 1
    return sorted(counted.items(), key=lambda item: (-item[1], item[0]))


def test_top_labels_stay_exact_through_copies_relabels_retries_moves_and_deletes(store, tmp_path,
                                                                                monkeypatch):
    from labelsd.serve import query
    from labelsd.serve.reader import as_reader, open_reader
    from labelsd.store import relabel

    moped = [PredictionRecord(1, "moped", "n03785016", 665, 0.5), *TOP3[1:]]

    def same():
        expected = _first_labels_of_present_paths(store)
        assert query.stats(as_reader(store), top=50).top_labels == expected
        if store.dialect == "sqlite":
            reader = open_reader(store.db)
            try:
                assert query.stats(reader, top=50).top_labels == expected
            finally:
                reader.close()
        return expected

    def classify(claims, preds=TOP3, model="InceptionV3/test", sha_of=None):
        contents.record_outcomes(store, "n", [records.Outcome(
            c, OutcomeKind.CLASSIFIED, sha256=(sha_of or {}).get(c.path)
            or hashlib.sha256(c.path.encode()).hexdigest(), size=10, mtime_ns=1, width=4,
            height=3, format="JPEG", model=model, predictions=preds) for c in claims])

    facts = _facts(tmp_path, 8)
    paths = [f.path for f in facts]
    assert same() == []
    workqueue.enqueue(store, facts)
    claims = workqueue.claim(store, "n", 8)
    shared = hashlib.sha256(b"one photo, two paths").hexdigest()
    classify(claims[:4], sha_of={paths[2]: shared, paths[3]: shared})  # a copy counts twice
    contents.record_outcomes(store, "n", [records.Outcome(
        claims[4], OutcomeKind.BAD_IMAGE, sha256=hashlib.sha256(b"bad").hexdigest(), size=1,
        error="not an image")])
    monkeypatch.setattr(workqueue, "MAX_ATTEMPTS", 1)
    contents.record_outcomes(store, "n", [records.Outcome(claims[5], OutcomeKind.RETRY,
                                                          error="busy")])
    classify(claims[6:], preds=moped)
    assert same() == [("tabby", 4), ("moped", 2)]
    assert workqueue.retry_failed(store) == 2  # failed, queued again: then labelled
    classify(workqueue.claim(store, "n", 8), preds=moped)
    assert same() == [("moped", 4), ("tabby", 4)]
    assert relabel.queue_other_models(store, "EfficientNetLite0/test") == 8  # another model
    classify(workqueue.claim(store, "n", 3), preds=moped, model="EfficientNetLite0/test",
             sha_of={paths[2]: shared, paths[3]: shared})
    same()
    classify(workqueue.claim(store, "n", 8), preds=TOP3, model="EfficientNetLite0/test",
             sha_of={paths[2]: shared, paths[3]: shared})
    same()
    contents.mark_missing(store, [paths[0], paths[2]])  # deleted: no longer counted
    contents.move_path(store, paths[3], str(tmp_path / "inbox" / "moved.jpg"))
    workqueue.enqueue(store, [facts[0]])  # back, not yet read
    counted = same()
    assert sum(n for _, n in counted) == 6
