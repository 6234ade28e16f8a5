"""Several nodes on one database: the queue hands every path to exactly one node,
a dead node's claims are taken over after the lease, and two nodes that see the
same file enqueue it once. Store tests run on SQLite and PostgreSQL (`db_url` is
parametrized in conftest); the ones named *_pg need PostgreSQL's row locks."""

from __future__ import annotations

import collections
import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta, timezone

import pytest
from sqlalchemy import func, inspect, select

from labelsd import records
from labelsd.records import Prediction as PredictionRecord
from labelsd.store import contents, migrations, workqueue
from labelsd.store.engine import open_store
from labelsd.store.schema import Base, Content, Prediction, QueueItem, TrackedPath

PREDICTIONS = [PredictionRecord(rank=1, label="tabby", wnid="n02123045", class_index=281,
                                score=0.7),
               PredictionRecord(rank=2, label="tiger cat", wnid="n02123159", class_index=282,
                                score=0.2),
               PredictionRecord(rank=3, label="Egyptian cat", wnid="n02124075",
                                class_index=285, score=0.1)]


def _classified(claim: records.Claim) -> records.Outcome:
    sha = hashlib.sha256(claim.path.encode()).hexdigest()
    return records.Outcome(claim=claim, kind="classified", sha256=sha, size=10, mtime_ns=1,
                         width=4, height=3, format="JPEG", model="test",
                         predictions=PREDICTIONS)


def _paths(tmp_path, n: int) -> list[str]:
    return [str(tmp_path / "inbox" / f"img_{i:04d}.jpg") for i in range(n)]


def _run_in_threads(work, args_list: list[tuple], timeout: float) -> None:
    """Run `work(*args)` for each args in its own thread, wait for all, and fail
    on any error raised in a thread or on a thread still running at `timeout`."""
    errors: list[BaseException] = []

    def run(*args) -> None:
        try:
            work(*args)
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=run, args=args) for args in args_list]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), f"threads still running after {timeout}s"


# ---- the fixture itself ----------------------------------------------------------


def test_db_url_is_parametrized_over_both_backends(request, store):
    backend = request.node.callspec.params["db_url"]
    assert store.dialect == {"sqlite": "sqlite", "postgresql": "postgresql"}[backend]


def test_migrations_on_postgresql_match_the_models(pg_url):
    with open_store(pg_url) as store:
        with store.engine.connect() as conn:
            assert migrations.applied_versions(conn) == {v for v, _, _ in migrations.MIGRATIONS}
            inspector = inspect(conn)
            for table in Base.metadata.sorted_tables:
                stored = {c["name"] for c in inspector.get_columns(table.name)}
                assert stored == set(table.columns.keys()), table.name
    # A second open (a second node starting) runs nothing.
    with open_store(pg_url) as again:
        assert migrations.migrate(again.engine) == []


def test_nodes_starting_together_migrate_once(pg_url):
    _run_in_threads(lambda: open_store(pg_url).close(), [()] * 4, timeout=60)
    with open_store(pg_url) as store, store.read() as session:
        count = session.execute(select(func.count()).select_from(
            migrations._migrations_table)).scalar_one()
    assert count == len(migrations.MIGRATIONS)


# ---- store and queue behaviour on both backends ----------------------------------------


def test_classified_record_round_trip(store, tmp_path):
    paths = _paths(tmp_path, 3)
    assert workqueue.enqueue(store, paths) == 3
    assert store.counts()["pending"] == 3
    claims = workqueue.claim(store, "node-a", limit=10)
    assert sorted(c.path for c in claims) == sorted(paths)
    assert all(c.enqueued_at.tzinfo is not None for c in claims)
    contents.record_outcomes(store, "node-a", [_classified(c) for c in claims])

    records = list(store.records())
    assert [r.path for r in records] == sorted(paths)
    for rec in records:
        assert rec.status == "done" and rec.error is None
        assert [p.label for p in rec.labels] == ["tabby", "tiger cat", "Egyptian cat"]
        assert rec.classified_at.tzinfo is not None
        assert rec.classified_at.utcoffset() == timedelta(0)
    assert store.counts() == {"pending": 0, "done": 3, "failed": 0, "missing": 0}
    assert workqueue.queue_depth(store) == 0


def test_missing_and_back_keep_labels(store, tmp_path):
    paths = _paths(tmp_path, 2)
    workqueue.enqueue(store, [records.FileFacts(p, 10, 1) for p in paths])
    contents.record_outcomes(store, "n", [_classified(c) for c in workqueue.claim(store, "n", 10)])
    assert contents.mark_missing(store, paths[:1]) == 1
    assert store.record(paths[0]).status == "missing"
    assert store.record(paths[0]).labels  # kept
    # Back, unchanged: not queued again, no longer missing.
    assert workqueue.enqueue(store, [records.FileFacts(paths[0], 10, 1)]) == 0
    assert store.record(paths[0]).status == "done"


def test_retry_backoff_and_failure(store, tmp_path, monkeypatch):
    monkeypatch.setattr(workqueue, "MAX_ATTEMPTS", 2)
    [path] = _paths(tmp_path, 1)
    workqueue.enqueue(store, [path])
    [c] = workqueue.claim(store, "n", 1)
    contents.record_outcomes(store, "n", [records.Outcome(claim=c, kind="retry", error="busy")])
    assert workqueue.claim(store, "n", 1) == []  # not before its back-off
    with store.write() as session:
        session.get(QueueItem, c.id).not_before = None
    [c] = workqueue.claim(store, "n", 1)
    contents.record_outcomes(store, "n", [records.Outcome(claim=c, kind="retry", error="busy")])
    rec = store.record(path)
    assert (rec.status, rec.error) == ("failed", "busy")
    assert workqueue.retry_failed(store) == 1
    assert store.record(path).status == "pending"


def test_every_row_claimed_exactly_once_by_concurrent_nodes(store, tmp_path):
    """500 rows, 8 nodes claiming (and finishing) concurrently, each with its
    own connection pool: every row is processed by exactly one node."""
    paths = _paths(tmp_path, 500)
    workqueue.enqueue(store, paths)
    claimed: dict[str, list[str]] = collections.defaultdict(list)
    start = threading.Barrier(8)

    def node(name: str) -> None:
        with open_store(store.db, migrate=False) as own:
            start.wait(timeout=30)
            while True:
                claims = workqueue.claim(own, name, limit=7)
                if not claims:
                    return
                claimed[name] += [c.path for c in claims]
                contents.record_outcomes(own, name, [_classified(c) for c in claims])

    _run_in_threads(node, [(f"node-{i}",) for i in range(8)], timeout=120)
    every = [p for ps in claimed.values() for p in ps]
    assert collections.Counter(every) == collections.Counter(paths)
    assert store.counts()["done"] == 500
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 1500


def test_dead_nodes_claims_are_taken_over_after_the_lease(store, tmp_path):
    workqueue.enqueue(store, _paths(tmp_path, 5))
    dead = workqueue.claim(store, "dead-node", limit=3)
    assert len(dead) == 3
    lease = timedelta(seconds=0.5)
    alive = workqueue.claim(store, "live-node", limit=10, lease=lease)
    assert {c.path for c in alive}.isdisjoint(c.path for c in dead)
    assert len(alive) == 2
    time.sleep(0.6)  # the lease itself is what is under test
    workqueue.renew_claims(store, "live-node")  # alive: keeps its own
    taken = workqueue.claim(store, "live-node", limit=10, lease=lease)
    assert sorted(c.path for c in taken) == sorted(c.path for c in dead)
    contents.record_outcomes(store, "live-node", [_classified(c) for c in alive + taken])
    assert store.counts()["done"] == 5


def test_renewed_claims_are_not_taken_over(store, tmp_path):
    workqueue.enqueue(store, _paths(tmp_path, 2))
    held = workqueue.claim(store, "slow-node", limit=2)
    lease = timedelta(seconds=0.5)
    time.sleep(0.6)
    workqueue.renew_claims(store, "slow-node")
    assert workqueue.claim(store, "other", limit=10, lease=lease) == []
    workqueue.release_claims(store, "slow-node")
    assert len(workqueue.claim(store, "other", limit=10, lease=lease)) == len(held)


def test_two_nodes_watching_one_folder_enqueue_each_path_once(store, tmp_path):
    paths = _paths(tmp_path, 200)
    start = threading.Barrier(2)

    def watcher() -> None:
        with open_store(store.db, migrate=False) as own:
            start.wait(timeout=30)
            for i in range(0, len(paths), 20):
                workqueue.enqueue(own, [records.FileFacts(p, 10, 1) for p in paths[i:i + 20]])

    _run_in_threads(watcher, [()] * 2, timeout=120)
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(QueueItem)) == 200
        assert session.scalar(select(func.count()).select_from(TrackedPath)) == 200
    claims = workqueue.claim(store, "a", limit=1000)
    assert len(claims) == 200


def test_nodes_listed_with_their_counters(store):
    from labelsd.store import nodes

    nodes.register(store, "host:1", model="m", device="cpu", watching=["/a"])
    nodes.register(store, "host:2", model="m", device="cpu", watching=["/a"])
    nodes.heartbeat(store, "host:1", done=3, failed=1)
    nodes.mark_stopped(store, "host:2")
    listed = {n.node_id: n for n in nodes.list_nodes(store)}
    assert listed["host:1"].alive and listed["host:1"].done == 3
    assert not listed["host:2"].alive
    assert nodes.watched_roots(store) == ["/a"]


# ---- PostgreSQL specifics -----------------------------------------------------------


def test_times_are_utc_whatever_the_server_time_zone_pg(pg_url, tmp_path):
    tokyo = pg_url + "&options=-c%20timezone%3DAsia/Tokyo"
    with open_store(tokyo) as store:
        workqueue.enqueue(store, _paths(tmp_path, 1))
        contents.record_outcomes(store, "n", [_classified(c) for c in workqueue.claim(store, "n", 1)])
        [rec] = store.records()
        assert rec.classified_at.tzinfo == timezone.utc
        with store.read() as session:
            raw = session.scalar(select(Content.classified_at))
        assert raw.utcoffset() == timedelta(hours=9)  # the session zone really differed


def test_claims_skip_rows_locked_by_an_open_transaction_pg(pg_url, tmp_path):
    """While one node's claim transaction holds rows, another node skips them
    instead of waiting or taking them."""
    with open_store(pg_url) as store:
        workqueue.enqueue(store, _paths(tmp_path, 10))
        with store.write() as session:
            locked = session.execute(select(QueueItem.id).order_by(QueueItem.id).limit(4)
                                     .with_for_update(skip_locked=True)).scalars().all()
            started = time.monotonic()
            other = workqueue.claim(store, "other", limit=10)
            assert time.monotonic() - started < 5
        assert len(other) == 6
        assert {c.id for c in other}.isdisjoint(locked)


def test_claims_from_processes_each_row_once_pg(pg_url, tmp_path):
    """Four separate processes claim from one PostgreSQL queue of 500 rows."""
    with open_store(pg_url) as store:
        workqueue.enqueue(store, _paths(tmp_path, 500))
    script = (
        "import sys\n"
        "from labelsd import records\n"
        "from labelsd.store import contents, workqueue\n"
        "from labelsd.store.engine import open_store\n"
        "store = open_store(sys.argv[1], migrate=False)\n"
        "while True:\n"
        "    claims = workqueue.claim(store, sys.argv[2], limit=5)\n"
        "    if not claims:\n"
        "        break\n"
        "    print('\\n'.join(c.path for c in claims), flush=True)\n"
        "    contents.record_outcomes(store, sys.argv[2], [records.Outcome(claim=c, kind='vanished')\n"
        "                                              for c in claims])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, pg_url, f"proc-{i}"],
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    every = [line for out in outputs for line in out.splitlines()]
    assert len(every) == 500 and len(set(every)) == 500
    assert sum(1 for out in outputs if out.strip()) >= 2  # the work really was shared


def test_claim_lease_from_the_environment():
    out = subprocess.run(
        [sys.executable, "-c", "from labelsd.store import workqueue; print(workqueue.CLAIM_LEASE.total_seconds())"],
        env={**os.environ, "LABELS_CLAIM_LEASE_S": "2.5"}, capture_output=True, text=True,
        check=True).stdout
    assert out.strip() == "2.5"


def test_postgres_cases_fail_loudly_in_ci_without_binaries(tmp_path):
    """CI=true and no PostgreSQL: the postgresql cases fail instead of skipping."""
    (tmp_path / "test_one.py").write_text("def test_one(store):\n    assert store\n")
    conftest = os.path.join(os.path.dirname(__file__), "conftest.py")
    (tmp_path / "conftest.py").write_text(open(conftest).read())
    import shutil
    shutil.copy(os.path.join(os.path.dirname(__file__), "pgserver.py"), tmp_path)
    env = {**os.environ, "PG_BINDIR": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin"}
    results = {}
    for ci in ("true", ""):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsf",
             str(tmp_path / "test_one.py")],
            env={**env, "CI": ci}, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        results[ci] = proc.stdout
    assert "1 passed, 1 error" in results["true"], results["true"]
    assert "PostgreSQL is required in CI" in results["true"]
    assert "1 passed, 1 skipped" in results[""], results[""]


# ---- two real labelsd services on one PostgreSQL --------------------------------------

NODE_LEASE_S = "6"  # LABELS_CLAIM_LEASE_S for the services: a killed node's claims return fast


def _start_nodes(tmp_path, pg_url, weights_file, n=2):
    from servicekit import Service, service_env

    inbox = tmp_path / "shared-inbox"
    inbox.mkdir()
    services = []
    for i in range(n):
        home = tmp_path / f"node{i}"
        home.mkdir()
        svc = Service(home, db=home / "unused.db", weights=weights_file, watch=[inbox],
                      args=["--batch-size", "2"], name=f"labelsd-{i}",
                      env=service_env(home, LABELS_CLAIM_LEASE_S=NODE_LEASE_S))
        svc.argv[svc.argv.index("--db") + 1] = pg_url  # servicekit assumes a SQLite file
        services.append(svc.start())
    for svc in services:
        svc.wait_ready()
    return inbox, services


def _drop_images(tmp_path, inbox, n: int) -> list[str]:
    """Stage n distinct small JPEGs, then move them into the watched folder at once."""
    from imagegen import make_image

    staging = tmp_path / "staging"
    staging.mkdir()
    staged = [make_image(staging / f"img_{i:03d}.jpg", size=(96, 72), seed=5000 + i)
              for i in range(n)]
    for src in staged:
        os.rename(src, inbox / src.name)
    return [os.path.realpath(inbox / src.name) for src in staged]


def _library_facts(pg_url) -> dict:
    with open_store(pg_url, migrate=False) as store, store.read() as session:
        return {
            "statuses": {r.path: r.status for r in store.records()},
            "contents": session.scalar(select(func.count()).select_from(Content)),
            "predictions": dict(session.execute(
                select(Prediction.sha256, func.count()).group_by(Prediction.sha256)).all()),
            "queue": session.scalar(select(func.count()).select_from(QueueItem)),
        }


def _wait_all_done(pg_url, paths, services, timeout=400):
    from servicekit import wait_for

    def done():
        for svc in services:
            if svc.proc.returncode not in (None, -9) and not svc.alive():
                raise AssertionError(f"{svc.name} died\n{svc.tail()}")
        facts = _library_facts(pg_url)
        return facts if all(facts["statuses"].get(p) == "done" for p in paths) else None

    def report():
        facts = _library_facts(pg_url)
        late = [p for p in paths if facts["statuses"].get(p) != "done"]
        return (f"{len(late)} not done, e.g. {late[:3]}\n"
                + "\n".join(s.tail(15) for s in services))

    return wait_for(done, timeout, f"{len(paths)} images done", interval=0.5, on_timeout=report)


def _node_rows(pg_url) -> dict:
    from labelsd.store import nodes

    with open_store(pg_url, migrate=False) as store:
        return {n.pid: n for n in nodes.list_nodes(store)}


def _assert_each_labeled_once(facts, paths):
    assert facts["contents"] == len(paths)
    assert sorted(facts["statuses"]) == sorted(paths)  # no duplicate or stray paths
    assert set(facts["predictions"].values()) == {3} and len(facts["predictions"]) == len(paths)
    assert facts["queue"] == 0


@pytest.mark.timeout(900)
def test_two_services_share_one_postgresql(tmp_path, pg_url, weights_file):
    from typer.testing import CliRunner

    from labels_cli.app import app
    from servicekit import wait_for

    inbox, services = _start_nodes(tmp_path, pg_url, weights_file)
    try:
        paths = _drop_images(tmp_path, inbox, 200)
        facts = _wait_all_done(pg_url, paths, services)
        _assert_each_labeled_once(facts, paths)
        # Both nodes did part of the work (their counters reach the table with the heartbeat).
        pids = {svc.pid for svc in services}
        wait_for(lambda: (r := _node_rows(pg_url)) and all(r.get(p) and r[p].done > 0
                                                            for p in pids)
                 and sum(r[p].done for p in pids) >= 200, 30, "both nodes' done counters",
                 on_timeout=lambda: str(_node_rows(pg_url)))
        # Each image was classified by exactly one node, once.
        logs = "".join(svc.log() for svc in services)
        assert [p for p in paths if logs.count(f"labeled {os.path.basename(p)}:") != 1] == []
        # Transient lock conflicts are retried with a warning; nothing may be an error.
        assert "Traceback" not in logs
        assert re.findall(r"^\S+ \S+ (?:ERROR|CRITICAL) .*$", logs, re.M) == []
        # `labels status --json` lists every node.
        result = CliRunner().invoke(app, ["--db", pg_url, "status", "--json"])
        assert result.exit_code == 0, result.output
        listed = {n["pid"] for n in __import__("json").loads(result.stdout)["nodes"]}
        assert pids <= listed
    finally:
        for svc in services:
            svc.stop()
    assert [svc.proc.returncode for svc in services] == [0, 0], [s.tail() for s in services]


@pytest.mark.timeout(900)
def test_killed_service_work_is_finished_by_the_other(tmp_path, pg_url, weights_file):
    from servicekit import wait_for

    inbox, (victim, survivor) = _start_nodes(tmp_path, pg_url, weights_file)
    try:
        paths = _drop_images(tmp_path, inbox, 200)
        victim_id = _node_rows(pg_url)[victim.pid].node_id

        def victim_holds_claims():
            with open_store(pg_url, migrate=False) as store, store.read() as session:
                return session.scalar(select(func.count()).select_from(QueueItem).where(
                    QueueItem.claimed_by == victim_id))

        wait_for(victim_holds_claims, 300, "the victim to hold claims", interval=0.1)
        victim.proc.kill()  # kill -9 mid-burst, claims in hand
        victim.proc.wait(10)
        facts = _wait_all_done(pg_url, paths, [survivor])
        _assert_each_labeled_once(facts, paths)
        assert survivor.alive(), survivor.tail()
        assert "Traceback" not in survivor.log()
    finally:
        for svc in (victim, survivor):
            svc.stop()
