"""The database misbehaving under the store: several processes opening one new
SQLite file at once, tags whose case-folded form is longer than the column, a
copy that fails half-way (issue 15, items 1 and 5)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time

import pytest

from labelsd import records
from labelsd.errors import StoreUnavailable
from labelsd.records import Prediction
from labelsd.store import contents, tags, workqueue
from labelsd.store import copy as dbcopy
from labelsd.store.engine import open_store

# ------------------------------------------------------------------ racing first start


def _open_at(db: str, start_at: float, results) -> None:
    """In a child process: wait for the common start time, open (and migrate)
    the store, run one read and one write, report."""
    try:
        while time.time() < start_at:
            time.sleep(0.001)
        store = open_store(db)
        store.counts()
        workqueue.enqueue(store, [records.FileFacts(f"/x/{os.getpid()}.jpg", 1, 1)])
        store.close()
        results.put("ok")
    except BaseException as err:  # noqa: BLE001 - reported to the parent as text
        results.put(f"{type(err).__name__}: {err}")


@pytest.mark.parametrize("existing", [False, True], ids=["new", "old"])
def test_processes_opening_one_database_at_once_all_succeed(tmp_path, existing):
    ctx = multiprocessing.get_context("fork")
    rounds, width = 6, 4
    failures = []
    for r in range(rounds):
        db = str(tmp_path / f"race-{r}" / "labels.db")
        if existing:
            open_store(db).close()
        results = ctx.Queue()
        start_at = time.time() + 1.0
        procs = [ctx.Process(target=_open_at, args=(db, start_at, results)) for _ in range(width)]
        for p in procs:
            p.start()
        outcome = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        failures += [o for o in outcome if o != "ok"]
        with open_store(db) as store:
            assert store.counts()["pending"] == width - sum(o != "ok" for o in outcome)
    assert failures == [], f"{len(failures)} of {rounds * width} opens failed: {failures[:3]}"


def test_opening_an_up_to_date_database_takes_no_write_lock(tmp_path):
    """A reader (`labels status`) opens while a writer holds the database: no
    migration is due, so it must not wait for (or fail on) the write lock."""
    db = tmp_path / "labels.db"
    open_store(str(db)).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with open_store(str(db)) as store:
            assert store.counts()["pending"] == 0
        assert time.monotonic() - started < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_journal_mode_is_set_once_not_on_every_connection(tmp_path):
    db = tmp_path / "labels.db"
    with open_store(str(db)) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    statements: list[str] = []
    from sqlalchemy import event

    with open_store(str(db), migrate=False) as store:
        event.listen(store.engine, "connect", insert=True, fn=
                     lambda dbapi_conn, _rec: dbapi_conn.set_trace_callback(statements.append))
        store.counts()
    assert not any("journal_mode = WAL" in s or "journal_mode=WAL" in s for s in statements)


# ------------------------------------------------------------------ tag length


def _one_content(store, folder) -> str:
    path = f"{folder}/cat.jpg"
    workqueue.enqueue(store, [records.FileFacts(path, 10, 1)])
    [claim] = workqueue.claim(store, "n", limit=1)
    contents.record_outcomes(store, "n", [records.Outcome(
        claim, "classified", sha256="a" * 64, size=10, mtime_ns=1, width=1, height=1,
        format="JPEG", model="m", predictions=[Prediction(1, "tabby", "n02123045", 281, 0.9)])])
    return path


@pytest.mark.parametrize("text", ["ß" * 150, "ﬃ" * 80, "x" * 201])
def test_a_tag_too_long_once_case_folded_is_refused_the_same_on_every_database(
        store, tmp_path, text):
    path = _one_content(store, tmp_path)
    with pytest.raises(tags.InvalidTag, match="at most"):
        tags.add_tags(store, path, [text])
    assert store.record(path).tags == []


def test_the_longest_tag_the_check_allows_is_stored(store, tmp_path):
    path = _one_content(store, tmp_path)
    longest = "ß" * (tags.MAX_TAG_LENGTH // 2)
    assert tags.add_tags(store, path, [longest, "y" * tags.MAX_TAG_LENGTH]) == sorted(
        [longest, "y" * tags.MAX_TAG_LENGTH], key=str.casefold)


def test_the_tag_limit_is_the_columns_width():
    from labelsd.store.schema import Tag

    assert tags.MAX_TAG_LENGTH == Tag.__table__.c.tag_key.type.length
    assert tags.MAX_TAG_LENGTH == Tag.__table__.c.tag.type.length


# ------------------------------------------------------------------ copy all or nothing


def _library(store, folder, n: int = 30) -> None:
    paths = [f"{folder}/img_{i:03d}.jpg" for i in range(n)]
    workqueue.enqueue(store, [records.FileFacts(p, 100 + i, i) for i, p in enumerate(paths)])
    claims = workqueue.claim(store, "node-1", limit=n - 5)
    contents.record_outcomes(store, "node-1", [records.Outcome(
        c, "classified", sha256=f"{i:064x}", size=100 + i, mtime_ns=i, width=1, height=1,
        format="JPEG", model="m", predictions=[Prediction(1, "tabby", "n02123045", 281, 0.9)])
        for i, c in enumerate(claims)])


def test_a_copy_that_fails_half_way_leaves_nothing_and_can_be_tried_again(tmp_path, db_url):
    with open_store(str(tmp_path / "source.db")) as source, open_store(db_url) as target:
        _library(source, tmp_path)
        calls = []

        def fail_half_way(table: str, rows: int) -> None:
            calls.append(table)
            if table == "paths":
                raise OSError("connection lost")

        with pytest.raises(OSError):
            dbcopy.copy_library(source, target, chunk=7, progress=fail_half_way)
        assert "contents" in calls
        assert set(dbcopy.row_counts(target).values()) == {0}

        counts = dbcopy.copy_library(source, target, chunk=7)  # no --force needed
        assert counts == dbcopy.row_counts(source)
        assert counts["paths"] == 30 and counts["queue"] == 5


# ------------------------------------------------------------------ full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted at tmp_path/disk (needs root), unmounted afterwards."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (a full disk is simulated on tmpfs)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder) -> os.PathLike:
    """A file that takes every free byte of the filesystem holding `folder`."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_reported_as_a_full_disk_and_nothing_is_damaged(small_disk):
    with open_store(str(small_disk / "labels.db")) as store:
        filler = fill(small_disk)
        facts = [records.FileFacts(f"/photos/{'x' * 200}-{i}.jpg", i, i) for i in range(2000)]
        with pytest.raises(StoreUnavailable, match="is full; free some space") as err:
            workqueue.enqueue(store, facts)
        assert "busy" not in str(err.value) and "locked" not in str(err.value)
        os.unlink(filler)
        assert workqueue.enqueue(store, facts) == 2000
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_a_migration_that_meets_a_full_disk_changes_nothing_and_runs_once_there_is_room(
        small_disk):
    """Migration 7 rebuilds tables (new pages for all of them): on a full disk the
    start fails saying so, the library stays on schema 6 with every row, and the next
    start, with room, migrates it."""
    from sqlalchemy import create_engine, text

    from labelsd.store import migrations

    db = small_disk / "labels.db"
    engine = create_engine(f"sqlite:///{db}")
    migrations.migrate(engine, target=6)
    engine.dispose()
    with open_store(str(db), migrate=False) as old:
        facts = [records.FileFacts(f"/photos/{i}.jpg", i, i) for i in range(300)]
        workqueue.enqueue(old, facts)
        claims = workqueue.claim(old, "n", limit=300)
        contents.record_outcomes(old, "n", [records.Outcome(
            c, records.OutcomeKind.CLASSIFIED, sha256=f"{c.id:064x}", size=1, mtime_ns=1,
            width=4, height=3, format="JPEG", model="m", predictions=[
                Prediction(r, f"label {r}", "n0", r, 0.5) for r in (1, 2, 3)]) for c in claims])
    filler = fill(small_disk)
    with pytest.raises(StoreUnavailable, match="is full; free some space"):
        open_store(str(db))
    from labelsd.serve import query
    from labelsd.serve.reader import open_reader

    with pytest.raises(StoreUnavailable, match="is full; free some space"):  # not "I/O error"
        reader = open_reader(str(db))
        try:
            query.search(reader, "cat")
        finally:
            reader.close()
    os.unlink(filler)  # with room again (a full disk cannot even be read in WAL mode)
    check = sqlite3.connect(db)
    try:
        assert check.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == 6
        assert check.execute("SELECT count(*) FROM predictions").fetchone()[0] == 900
        assert "WITHOUT ROWID" not in check.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'predictions'").fetchone()[0]
    finally:
        check.close()
    with open_store(str(db)) as store, store.read() as session:
        assert session.execute(text("SELECT max(version) FROM schema_migrations")).scalar() == migrations.LATEST
        assert session.execute(text("SELECT count(*) FROM predictions")).scalar() == 900
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_the_wal_is_copied_back_every_wal_checkpoint_pages(tmp_path, monkeypatch):
    """Every store connection checkpoints the WAL once it holds WAL_CHECKPOINT_PAGES
    pages (raised from SQLite's 1,000 for the writer's sake), so the file stays
    about that size however much is written."""
    from labelsd.store import connect

    monkeypatch.setattr(connect, "WAL_CHECKPOINT_PAGES", 40)
    db = tmp_path / "labels.db"
    with open_store(str(db)) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 40
        for start in range(0, 3000, 100):
            workqueue.enqueue(store, [records.FileFacts(f"{tmp_path}/{start + i}.jpg", 10, 1)
                                      for i in range(100)])
        wal_pages = (db.parent / (db.name + "-wal")).stat().st_size // 4096
        assert wal_pages < 40 + 60, wal_pages  # the threshold, and one commit past it
    with open_store(str(db)) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 40
