"""`labels db copy` / labelsd.store.copy: a library moves between databases intact
(SQLite to PostgreSQL and back, SQLite to SQLite), in chunks, refusing to
overwrite a library unless told to merge, and merging idempotently."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from labelsd import records
from labelsd.records import Prediction
from labelsd.store import contents, judgements, workqueue
from labelsd.store import copy as dbcopy
from labelsd.store.engine import open_store
from labelsd.store.schema import Node, QueueItem, Tag

runner = CliRunner()

CAT = [Prediction(1, "tabby", "n02123045", 281, 0.7),
       Prediction(2, "tiger cat", "n02123159", 282, 0.2),
       Prediction(3, "Egyptian cat", "n02124075", 285, 0.05)]
DOG = [Prediction(1, "golden retriever", "n02099601", 207, 0.9),
       Prediction(2, "Labrador retriever", "n02099712", 208, 0.06),
       Prediction(3, "tennis ball", "n04409515", 852, 0.01)]


def _fill(store, folder, n: int = 40) -> None:
    """A library with every kind of row: done (cats, dogs, one content at two
    paths), a failed image, a missing file, pending queue rows, a failed queue
    row, tags, and a node (which must not be copied)."""
    folder = str(folder)
    paths = [f"{folder}/img_{i:03d}.jpg" for i in range(n)]
    workqueue.enqueue(store, [records.FileFacts(p, 100 + i, i) for i, p in enumerate(paths)])
    claims = workqueue.claim(store, "node-1", limit=n)
    outcomes = []
    for i, c in enumerate(claims[:n - 6]):
        sha = f"{i // 2 if i < 4 else i:064x}"  # img_000/001 and 002/003 share a content
        outcomes.append(records.Outcome(c, "classified", sha256=sha, size=100 + i, mtime_ns=i,
                                      width=640, height=480, format="JPEG", model="m/test",
                                      predictions=CAT if i % 2 else DOG))
    bad = claims[n - 6]
    outcomes.append(records.Outcome(bad, "bad_image", sha256="f" * 64, size=3, mtime_ns=1,
                                  error="not an image (truncated)"))
    gave_up = claims[n - 5]
    contents.record_outcomes(store, "node-1", outcomes)
    with store.write() as session:  # one queue row has already failed for good
        session.execute(QueueItem.__table__.update().where(QueueItem.id == gave_up.id)
                        .values(state="failed", last_error="disk error", attempts=5))
    workqueue.release_claims(store, "node-1")
    contents.mark_missing(store, [paths[10]])
    with store.write() as session:
        session.add_all([Tag(sha256=f"{5:064x}", tag_key="vacation", tag="Vacation"),
                         Tag(sha256=f"{5:064x}", tag_key="beach", tag="beach"),
                         Tag(sha256=f"{0:064x}", tag_key="dogs", tag="Dogs")])
        session.add(Node(node_id="host:1", host="host", pid=1, watching="[]", done=3, failed=0))
    judgements.reject(store, [f"{5:064x}"], CAT[0].class_index)  # a person's judgements go too
    judgements.confirm(store, [f"{5:064x}"], CAT[1].class_index, "web")


def _records(store) -> list[dict]:
    return [r.to_dict() if hasattr(r, "to_dict") else r.__dict__ for r in store.records()]


@pytest.fixture
def library(tmp_path):
    store = open_store(str(tmp_path / "source.db"))
    _fill(store, tmp_path / "inbox")
    yield store
    store.close()


def test_sqlite_to_postgresql_round_trip(library, pg_url, tmp_path):
    before = _records(library)
    assert {r["status"] for r in before} == {"done", "failed", "missing", "pending"}
    assert any(r["rejected"] for r in before) and any(p["confirmed"] for r in before for p in r["labels"])
    with open_store(pg_url) as target:
        counts = dbcopy.copy_library(library, target, chunk=7)
        assert counts == dbcopy.row_counts(library)
        assert _records(target) == before
        with target.read() as session:
            assert session.scalars(select(Node)).all() == []  # nodes stay behind
            assert all(row.claimed_by is None for row in session.scalars(select(QueueItem)))
        # ... and back again into a fresh SQLite file.
        with open_store(str(tmp_path / "back.db")) as back:
            dbcopy.copy_library(target, back, chunk=5)
            assert _records(back) == before
        # The copied queue works: the target's nodes claim the pending rows.
        pending = {r["path"] for r in before if r["status"] == "pending"}
        assert {c.path for c in workqueue.claim(target, "pg-node", limit=100)} == pending


def test_copy_streams_in_chunks(library, tmp_path):
    seen: list[tuple[str, int]] = []
    with open_store(str(tmp_path / "target.db")) as target:
        dbcopy.copy_library(library, target, chunk=4,
                            progress=lambda table, n: seen.append((table, n)))
    # One progress call per chunk of 4, the last one at the table's full count
    # (compared with the source, so stopping after a chunk cannot pass).
    total = dbcopy.row_counts(library)
    for table in ("contents", "paths"):
        counts = [n for t, n in seen if t == table]
        assert counts == [*range(4, total[table] + 1, 4),
                          *([total[table]] if total[table] % 4 else [])], table


def test_non_empty_target_refused_unless_merging(library, db_url, tmp_path):
    with open_store(db_url) as target:
        first = dbcopy.copy_library(library, target)
        assert first["paths"] == 40
        with pytest.raises(dbcopy.TargetNotEmpty, match="--force"):
            dbcopy.copy_library(library, target)
        again = dbcopy.copy_library(library, target, merge=True)
        assert again == dict.fromkeys(dbcopy.TABLES, 0)  # idempotent
        assert _records(target) == _records(library)


def test_same_database_refused(library):
    with open_store(library.db) as same, pytest.raises(dbcopy.SameDatabase):
        dbcopy.copy_library(library, same, merge=True)


def test_cli_copy_to_postgresql(library, pg_url):
    from labels_cli.app import app

    result = runner.invoke(app, ["--db", library.db, "db", "copy", "--to", pg_url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["paths"] == 40
    again = runner.invoke(app, ["--db", library.db, "db", "copy", "--to", pg_url])
    assert again.exit_code == 1
    assert "already holds a library" in again.stderr and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    merged = runner.invoke(app, ["--db", library.db, "db", "copy", "--to", pg_url, "--force"])
    assert merged.exit_code == 0, merged.output
    assert merged.stdout.startswith("copied 0 contents")


def test_search_output_identical_after_copy(library, pg_url):
    import typer

    from labels_cli.app import app

    if "search" not in typer.main.get_command(app).commands:
        pytest.skip("`labels search` is not there yet")
    with open_store(pg_url) as target:
        dbcopy.copy_library(library, target)
    for query in (["cat"], ["dog"], ["retriever", "--min-score", "0.5"], ["--tag", "vacation",
                                                                        "animal"]):
        source = runner.invoke(app, ["--db", library.db, "search", *query, "--json"])
        copied = runner.invoke(app, ["--db", pg_url, "search", *query, "--json"])
        assert source.exit_code == 0, source.output
        assert copied.exit_code == 0, copied.output
        assert json.loads(source.stdout), query  # the comparison is not vacuous
        assert copied.stdout == source.stdout, query
