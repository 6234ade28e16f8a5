"""The store on real database files: round-trips, WAL, concurrency, migrations."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, select, text

from labelsd import records
from labelsd.errors import NotTracked, StoreUnavailable
from labelsd.paths import canonical_path
from labelsd.records import Prediction
from labelsd.store import contents, migrations, tags, workqueue
from labelsd.store.engine import open_store
from labelsd.store.schema import Base, Content, Tag, TrackedPath

PREDS = [Prediction(1, "tabby", "n02123045", 281, 0.7),
         Prediction(2, "tiger cat", "n02123159", 282, 0.2),
         Prediction(3, "Egyptian cat", "n02124075", 285, 0.05)]


def classify(store, path, sha, preds=PREDS, kind="classified", error=None):
    """Drive a path through the queue as the pipeline does."""
    workqueue.enqueue(store, [records.FileFacts(path, 10, 1)])
    claims = [c for c in workqueue.claim(store, "test-node", 100) if c.path == canonical_path(path)]
    assert claims, f"{path} was not claimable"
    contents.record_outcomes(store, "test-node", [records.Outcome(
        claims[0], kind, sha256=sha, size=10, mtime_ns=1, width=640, height=480,
        format="JPEG", model="InceptionV3/test", predictions=list(preds), error=error)])


def test_round_trip_contents_paths_predictions_tags(store, tmp_path):
    path = str(tmp_path / "cat.jpg")
    classify(store, path, "a" * 64)
    with store.write() as session:
        session.add(Tag(sha256="a" * 64, tag_key="vacation", tag="Vacation"))
    rec = store.record(path)
    assert rec.status == "done" and rec.sha256 == "a" * 64
    assert (rec.width, rec.height) == (640, 480)
    assert [p.label for p in rec.labels] == ["tabby", "tiger cat", "Egyptian cat"]
    assert rec.labels[0].score == pytest.approx(0.7)
    assert rec.tags == ["Vacation"]
    assert rec.classified_at is not None and rec.classified_at.tzinfo is not None
    assert rec.to_dict()["labels"][0] == {"rank": 1, "label": "tabby", "wnid": "n02123045",
                                          "class_index": 281, "score": pytest.approx(0.7),
                                          "confirmed": False}


def test_statuses_derive_from_queue_content_and_presence(store, tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg"))
    classify(store, a, "a" * 64)
    classify(store, b, "b" * 64, preds=[], kind="bad_image", error="not an image")
    workqueue.enqueue(store, [c])
    assert store.counts() == {"pending": 1, "done": 1, "failed": 1, "missing": 0}
    assert store.record(b).error == "not an image"
    contents.mark_missing(store, [a])
    assert store.record(a).status == "missing"
    assert [p.label for p in store.record(a).labels][0] == "tabby"  # labels kept
    assert [r.path for r in store.records(status="pending")] == [canonical_path(c)]


def test_unchanged_file_is_not_queued_again(store, tmp_path):
    path = str(tmp_path / "a.jpg")
    classify(store, path, "a" * 64)
    assert workqueue.enqueue(store, [records.FileFacts(path, 10, 1)]) == 0
    assert workqueue.enqueue(store, [records.FileFacts(path, 11, 2)]) == 1


def test_requeued_while_reading_is_released_not_deleted(store, tmp_path):
    path = str(tmp_path / "a.jpg")
    workqueue.enqueue(store, [path])
    (claim,) = workqueue.claim(store, "n1", 10)
    workqueue.enqueue(store, [records.FileFacts(path, 99, 99)])  # the file changed meanwhile
    contents.record_outcomes(store, "n1", [records.Outcome(
        claim, "classified", sha256="a" * 64, size=10, mtime_ns=1, predictions=PREDS,
        model="m")])
    again = workqueue.claim(store, "n1", 10)
    assert [c.path for c in again] == [canonical_path(path)]


def test_retry_requeues_failed_contents_at_each_present_path(store, tmp_path):
    a, b, gone = (str(tmp_path / n) for n in ("a.jpg", "b.jpg", "gone.jpg"))
    for path in (a, b, gone):
        classify(store, path, "b" * 64, preds=[], kind="bad_image", error="truncated")
    contents.mark_missing(store, [gone])
    assert workqueue.retry_failed(store) == 2
    assert store.counts() == {"pending": 2, "done": 0, "failed": 0, "missing": 1}
    assert sorted(c.path for c in workqueue.claim(store, "n1", 10)) == sorted(
        canonical_path(p) for p in (a, b))


def test_require_content_raises_not_tracked(store, tmp_path):
    with store.read() as session, pytest.raises(NotTracked, match="not tracked"):
        store.require_content(session, str(tmp_path / "nope.jpg"))


def test_wal_file_exists_after_a_write(tmp_path):
    db = tmp_path / "w.db"
    store = open_store(str(db))
    workqueue.enqueue(store, [str(tmp_path / "x.jpg")])
    assert Path(str(db) + "-wal").exists()
    with store.read() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert session.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    store.close()


def test_second_connection_reads_while_first_writes(tmp_path):
    db = str(tmp_path / "c.db")
    writer, reader = open_store(db), open_store(db)
    classify(writer, str(tmp_path / "old.jpg"), "0" * 64)
    inside = threading.Event()
    release = threading.Event()

    def long_write():
        with writer.write() as session:
            session.add(Content(sha256="f" * 64, size=1, status="done"))
            session.flush()
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=long_write)
    thread.start()
    try:
        assert inside.wait(10)
        # The write transaction is open and holds the write lock; a reader is not blocked
        # and sees the last committed state.
        assert reader.counts()["done"] == 1
        with reader.read() as session:
            assert session.get(Content, "f" * 64) is None
    finally:
        release.set()
        thread.join(10)
    with reader.read() as session:
        assert session.get(Content, "f" * 64) is not None
    writer.close()
    reader.close()


def test_a_new_database_is_said_in_one_line(tmp_path, caplog):
    """A new library is created at the latest schema: one line, not one per migration."""
    with caplog.at_level("INFO", logger="labelsd.store.migrations"):
        open_store(str(tmp_path / "new.db")).close()
    said = [r.getMessage() for r in caplog.records if r.levelname == "INFO"
            and r.name == "labelsd.store.migrations"]
    assert said == [f"created a new database at schema version {migrations.LATEST}"]


def test_migration_upgrades_a_database_built_by_the_previous_schema(tmp_path, caplog):
    db = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{db}")
    assert migrations.migrate(engine, target=1) == [1]
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO contents (sha256, size, status) VALUES (:s, 1, 'done')"), {"s": "a" * 64})
        conn.execute(text(
            "INSERT INTO paths (path, sha256, first_seen, last_seen, missing) "
            "VALUES ('/x/old.jpg', :s, '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0)"),
            {"s": "a" * 64})
    assert "not_before" not in {c["name"] for c in inspect(engine).get_columns("queue")}
    engine.dispose()

    with caplog.at_level("INFO", logger="labelsd.store.migrations"):
        store = open_store(str(db))  # opening upgrades, saying each step
    said = [r.getMessage() for r in caplog.records if r.name == "labelsd.store.migrations"]
    assert said[0].startswith("migrating database to schema version 2 (")
    assert len(said) == migrations.LATEST - 1
    assert store.record("/x/old.jpg").status == "done"
    insp = inspect(store.engine)
    assert "not_before" in {c["name"] for c in insp.get_columns("queue")}
    with store.read() as session:
        versions = session.execute(text(
            "SELECT version FROM schema_migrations ORDER BY version")).scalars().all()
    assert versions == [v for v, _, _ in migrations.MIGRATIONS]
    assert migrations.migrate(store.engine) == []  # idempotent
    store.close()


def test_migration_7_keeps_every_label_tag_and_path_and_the_cascades(tmp_path):
    """Migration 7 rebuilds SQLite's predictions and contents clustered by their
    keys (WITHOUT ROWID) and widens the paths-by-content index: a library built
    on schema 6 keeps every row (nothing cascades from the dropped contents),
    and deleting a content still deletes its labels and tags."""
    db = tmp_path / "six.db"
    engine = create_engine(f"sqlite:///{db}")
    migrations.migrate(engine, target=6)
    engine.dispose()
    with open_store(str(db), migrate=False) as old:
        for i in range(30):
            classify(old, str(tmp_path / f"{i}.jpg"), f"{i:064x}")
        for i in range(0, 30, 3):
            tags.add_tags(old, str(tmp_path / f"{i}.jpg"), [f"tag {i}", "Grandma"])
        before = _all_rows(old)
    assert len(before["predictions"]) == 90 and len(before["tags"]) == 20

    with open_store(str(db)) as store:
        assert _all_rows(store) == before
        with store.read() as session:
            for table in ("predictions", "contents", "tags"):
                ddl = session.execute(text(
                    "SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar_one()
                assert "WITHOUT ROWID" in ddl, table
            assert session.execute(text("PRAGMA foreign_key_check")).all() == []
        # migrations run with foreign keys off: every pooled connection has them back on
        for _ in range(3):
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        with store.write() as session:
            session.execute(text("DELETE FROM paths WHERE sha256 = :s"), {"s": f"{0:064x}"})
            session.execute(text("DELETE FROM contents WHERE sha256 = :s"), {"s": f"{0:064x}"})
        after = _all_rows(store)
    assert len(after["predictions"]) == 87 and len(after["tags"]) == 18


def _all_rows(store) -> dict[str, list]:
    with store.read() as session:
        return {table: sorted(tuple(r) for r in session.execute(text(f"SELECT * FROM {table}")))
                for table in ("contents", "paths", "predictions", "tags")}


def test_orm_models_match_the_migrated_schema(store):
    insp = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        migrated = {c["name"] for c in insp.get_columns(table.name)}
        assert migrated == {c.name for c in table.columns}, table.name
        indexed = {i["name"] for i in insp.get_indexes(table.name)}
        assert {i.name for i in table.indexes} <= indexed, table.name


paths_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
    min_size=1, max_size=40).filter(lambda s: s not in (".", ".."))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=paths_text)
def test_unicode_and_newline_paths_round_trip(store, tmp_path, name):
    path = os.path.join(str(tmp_path), name + ".jpg")
    sha = format(abs(hash(name)), "x").rjust(64, "0")[:64]
    classify(store, path, sha)
    rec = store.record(path)
    assert rec is not None and rec.path == canonical_path(path)
    with store.read() as session:
        stored = session.scalar(select(TrackedPath.path).where(TrackedPath.path == rec.path))
    assert stored == canonical_path(path)


def test_newline_in_path_round_trips(store, tmp_path):
    path = str(tmp_path / "two\nlines ünï 🐈.jpg")
    classify(store, path, "e" * 64)
    assert store.record(path).path.endswith("two\nlines ünï 🐈.jpg")


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"this is not sqlite" * 100), "not a labelsd database"),
])
def test_bad_database_gives_a_clear_error(tmp_path, make_bad, message):
    bad = tmp_path / "bad.db"
    make_bad(bad)
    with pytest.raises(StoreUnavailable, match=message):
        open_store(str(bad))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_folder_gives_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StoreUnavailable, match="writable|permission|read-only|cannot"):
        open_store(str(locked / "sub" / "labels.db"))


def test_missing_parent_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailable, match="cannot create the database folder"):
        open_store(str(blocker / "sub" / "labels.db"))
