"""The read-only reader (serve/reader.py: sqlite3, no SQLAlchemy) reads the
library exactly as the service's Store does: the same records, statuses,
errors, labels, tags and counts, on every status a path can be in."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from labelsd import records
from labelsd.serve import query
from labelsd.serve.reader import as_reader, open_reader
from labelsd.store import contents, nodes, tags, workqueue
from labelsd.store.schema import QueueItem
from test_search import LIBRARY, add_images, add_library


@pytest.fixture
def every_status(store, tmp_path, monkeypatch):
    paths = add_library(store, tmp_path, monkeypatch, {"persian.jpg": ["fluffy", "Ünï ✓"]})
    waiting = str(tmp_path / "photos" / "waiting.jpg")
    workqueue.enqueue(store, [waiting])  # pending, never read
    bad = str(tmp_path / "photos" / "bad.jpg")
    workqueue.enqueue(store, [bad])
    (claim,) = [c for c in workqueue.claim(store, "t", limit=10) if c.path.endswith("bad.jpg")]
    contents.record_outcomes(store, "t", [records.Outcome(
        claim=claim, kind="bad_image", sha256=hashlib.sha256(b"bad").hexdigest(), size=3,
        mtime_ns=1, error="truncated JPEG")])
    stuck = str(tmp_path / "photos" / "stuck.jpg")
    workqueue.enqueue(store, [stuck])
    with store.write() as session:  # failed in the queue before its content was read
        session.execute(update(QueueItem).where(QueueItem.path.endswith("stuck.jpg"))
                        .values(state="failed", last_error="permission denied"))
    workqueue.enqueue(store, [paths["tabby.jpg"]], force=True)  # changed: pending again
    return paths


def test_records_and_counts_match_the_store(store, every_status):
    reader = open_reader(store.db)  # sqlite3 read-only; a URL goes through its own Store
    try:
        assert [r.to_dict() for r in reader.records()] == [r.to_dict() for r in store.records()]
        assert reader.counts() == store.counts()
        statuses = {r.status for r in reader.records()}
        assert statuses == {"pending", "done", "failed", "missing"}
        for status in ("pending", "failed"):
            assert ([r.path for r in reader.records(status=status)]
                    == [r.path for r in store.records(status=status)])
        assert [r.to_dict() for r in reader.records(chunk=2)] == [
            r.to_dict() for r in store.records()]  # paged
        path = every_status["persian.jpg"]
        assert reader.record(path).to_dict() == store.record(path).to_dict()
    finally:
        reader.close()


def test_summaries_match_the_store(store, every_status):
    assert query.tag_counts(as_reader(store)) == query.tag_counts(store)  # sqlite3 and the Store
    nodes.register(store, "n:1", model="m", device="CPU", watching=["/w"])
    listed = {n.node_id: n.to_dict() for n in nodes.list_nodes(store)}
    for node in query.list_nodes(store):
        theirs = listed[node["node_id"]]
        assert node["alive"] == theirs["alive"] and node["watching"] == theirs["watching"]
        assert node["heartbeat_age_s"] == pytest.approx(theirs["heartbeat_age_s"], abs=2)


def test_constants_agree_with_the_store():
    assert query.ALIVE_WITHIN_S == nodes.ALIVE_WITHIN_S
    for text in ("  Ferien ", "ÜNÏ", "Straße"):
        assert query.tag_key(text) == tags.tag_key(text)


def test_a_reader_never_writes(db_url, store, tmp_path):
    if "://" in db_url:
        pytest.skip("SQLite only: the reader opens the file with mode=ro")
    add_images(store, {str(tmp_path / "a.jpg"): LIBRARY["tabby.jpg"]})
    reader = open_reader(db_url)
    try:
        with reader.read() as run, pytest.raises(Exception, match="readonly"):
            run("DELETE FROM paths", {})
    finally:
        reader.close()
    assert len(store.records_for_paths([str(tmp_path / "a.jpg")])) == 1


@pytest.mark.parametrize(("db", "shown"), [
    ("/var/lib/labelsd/labels.db", "/var/lib/labelsd/labels.db"),
    ("postgresql+psycopg://labels:s3cret@dbhost:5432/labels",
     "postgresql+psycopg://labels:***@dbhost:5432/labels"),
    ("postgresql+psycopg://labels@/labels?host=/run/postgresql",
     "postgresql+psycopg://labels@/labels?host=/run/postgresql"),
])
def test_status_names_the_database_without_its_password(db, shown):
    from labelsd.serve.reader import where_shown

    assert where_shown(db) == shown


def test_the_record_sql_has_one_owner_that_both_readers_run(store, every_status, monkeypatch):
    """store.recordsql holds the record SQL and the row-to-record assembly
    (`record_dicts`, which `assemble` and every record read go through); the
    Store (SQLAlchemy) and the read-only Reader (sqlite3) each run it on their own
    connection, and it imports no SQLAlchemy (the CLI's read path must not)."""
    import subprocess
    import sys

    from labelsd.store import recordsql

    assembled: list[str] = []
    real = recordsql.record_dicts

    def counted(run, rows):
        found = real(run, rows)
        assembled.extend(d["path"] for d in found)
        return found

    monkeypatch.setattr(recordsql, "record_dicts", counted)
    path = every_status["persian.jpg"]
    read_only = open_reader(store.db)
    try:
        for reader in (store, read_only):
            assembled.clear()
            assert [r.path for r in reader.records()] == assembled != []
            assembled.clear()
            assert reader.record(path).path == path and assembled == [path]
            assembled.clear()
            assert [r.path for r in reader.records_for_paths([path])] == assembled == [path]
    finally:
        read_only.close()
    done = subprocess.run([sys.executable, "-c", "import sys, labelsd.store.recordsql; "
                           "print('sqlalchemy' in sys.modules)"], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_records_are_built_once_as_their_json(store, every_status):
    """recordsql builds each record once, in the JSON shape (`record_dicts`: what
    `--json` prints, with no dataclass on the way); `ImageRecord.from_dict` is the
    inverse of `to_dict`, so the records the Store hands out are the same ones."""
    read_only = open_reader(store.db)
    try:
        for reader in (store, read_only):
            dicts = list(reader.record_dicts())
            assert dicts == [r.to_dict() for r in reader.records()]
            assert {d["status"] for d in dicts} == {"pending", "done", "failed", "missing"}
            assert [records.ImageRecord.from_dict(d).to_dict() for d in dicts] == dicts
            assert list(reader.record_dicts(status="failed", chunk=1)) == [
                r.to_dict() for r in reader.records(status="failed")]
    finally:
        read_only.close()


def counting_statements(reader, monkeypatch) -> list[str]:
    """The statements `reader` runs from now on (its read transactions' `run`)."""
    from contextlib import contextmanager

    statements: list[str] = []
    real = reader.read

    @contextmanager
    def read():
        with real() as run:
            yield lambda sql, params: statements.append(sql) or run(sql, params)

    monkeypatch.setattr(reader, "read", read)
    return statements


def test_search_reads_each_hit_with_its_labels_in_one_statement(store, tmp_path, monkeypatch):
    """A hit's path, content and three labels come in the row that finds it, with
    whether its content has tags: after the hits, only tags are read, for tagged
    contents only, one statement per CHUNK of them, never a statement (or three)
    per image."""
    from labelsd.store import recordsql

    count = recordsql.CHUNK + 20
    found = add_images(store, {str(tmp_path / f"cat{i:04d}.jpg"): [
        (281, 0.5 + i / 10_000), (999, 0.1), (500, 0.01)] for i in range(count)})
    read_only = open_reader(store.db)
    try:
        for reader in (as_reader(store), read_only):
            statements = counting_statements(reader, monkeypatch)
            assert len(query.find(reader, "cat").records) == count
            # the tag keys, the hits, the count of what the floor hid: no tags anywhere
            assert len(statements) == 3, statements
        tags.add_tags(store, found[str(tmp_path / "cat0007.jpg")], ["Fluffy", "indoor"])
        tags.add_tags(store, found[str(tmp_path / "cat0450.jpg")], ["garden"])
        for reader in (as_reader(store), read_only):
            statements = counting_statements(reader, monkeypatch)
            result = query.find(reader, "cat")
            assert len(result.records) == count
            assert result.records[0].path.endswith(f"cat{count - 1:04d}.jpg")  # the best first
            assert [p.rank for p in result.records[0].labels] == [1, 2, 3]
            tagged = next(r for r in result.records if r.path.endswith("cat0007.jpg"))
            assert tagged.tags == ["Fluffy", "indoor"]
            assert sum(bool(r.tags) for r in result.records) == 2
            # the tag keys, the hits with their records, the count of what the floor hid,
            # then the two tagged contents' tags
            assert len(statements) == 1 + 1 + 1 + 1, statements
            statements.clear()
            assert len(list(reader.records(chunk=400))) == count
            assert len(statements) == 2 * 2  # per page: records, and its one tagged content's tags
    finally:
        read_only.close()


def test_tags_of_many_tagged_hits_are_read_a_chunk_at_a_time(store, tmp_path, monkeypatch):
    """Tagged contents' tags come one statement per CHUNK of them (an IN list
    SQLite before 3.32 can bind), each tag on its own record, in tag order."""
    from labelsd.store import recordsql

    monkeypatch.setattr(recordsql, "CHUNK", 2)
    found = add_images(store, {str(tmp_path / f"cat{i}.jpg"): [(281, 0.5 + i / 100)]
                               for i in range(6)})
    for i in range(5):
        tags.add_tags(store, found[str(tmp_path / f"cat{i}.jpg")], [f"z{i}", f"a{i}"])
    read_only = open_reader(store.db)
    try:
        for reader in (as_reader(store), read_only):
            statements = counting_statements(reader, monkeypatch)
            result = query.find(reader, "cat")
            assert {os.path.basename(r.path): r.tags for r in result.records} == {
                **{f"cat{i}.jpg": [f"a{i}", f"z{i}"] for i in range(5)}, "cat5.jpg": []}
            assert len(statements) == 1 + 1 + 1 + 3, statements  # ... + the floor's count
    finally:
        read_only.close()


# ---- the JSON text of records (store/recordjson.py) ----------------------------------

_scalar = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(st.characters(codec=None, exclude_categories=()), max_size=12))
_text = st.none() | st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_label = st.tuples(st.text(max_size=12), st.text(max_size=10), st.integers(0, 999),
                   st.floats()) | st.just((None, None, None, None))
_when = st.none() | st.datetimes().map(str) | st.datetimes(
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5))]))
# contents: a few that rows share often, and any others
_shas = st.sampled_from(["a", "b", "c"]) | st.text("0123456789abcdef", min_size=1, max_size=4)


@st.composite
def _record_rows(draw) -> tuple:
    from labelsd.store import recordsql

    row = (draw(st.text(st.characters(codec=None, exclude_categories=()), min_size=1)),
           draw(st.none() | _shas),
           draw(st.sampled_from(["done", "failed", "pending", "missing"])),
           draw(_text), draw(_scalar), draw(_scalar), draw(_when), draw(_text), draw(_text),
           draw(st.none() | st.floats()), draw(st.none() | st.floats()), draw(_text),
           *draw(_label), *draw(_label), *draw(_label))
    # whether the content has tags, and judgements (EXISTS: false without a content)
    row += (draw(st.sampled_from([0, 1, True, False])) if row[1] is not None else 0,
            draw(st.sampled_from([0, 1, True, False])) if row[1] is not None else 0)
    assert len(row) == recordsql.RECORD_WIDTH
    return row


@st.composite
def _judgements_of(draw, rows: list[tuple]) -> dict[str, dict[int, tuple]]:
    """Judgements of the rows' contents, mostly of their own labels' classes: class ->
    (verdict, label, source, when, whether it hides an imported tag)."""
    from labelsd.store import recordsql

    judged: dict[str, dict[int, tuple]] = {}
    for r in rows:
        own = [r[at] for at in range(recordsql.LABELS_AT + 2, recordsql.TAGGED_AT, 4) if r[at] is not None]
        classes = draw(st.lists(st.sampled_from(own) | st.integers(0, 999) if own else st.integers(0, 999),
                                max_size=3))
        for index in classes:
            judged.setdefault(r[1], {})[index] = (
                draw(st.sampled_from(["rejected", "confirmed"])), draw(st.sampled_from(["tabby", "é"])),
                draw(st.sampled_from(["cli", "xmp", "web"])), draw(_when.filter(lambda w: w is not None)),
                draw(st.booleans()))
    return judged


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(_record_rows(), max_size=6), data=st.data())
def test_record_json_is_json_dumps_of_the_record_dicts(rows, data):
    """`--json`'s text straight from rows (search) is, byte for byte, json.dumps of
    the dicts every other output is built from: any text (lone surrogates of
    paths that are not UTF-8), NaN and infinities, times naive and aware, pending
    paths' labels left out, tags where the row says its content has them, and the
    judgements where it says it has those: rejected labels left out and listed,
    confirmed ones marked, imported tags a rejected label hides left out."""
    from labelsd.store import recordjson, recordsql

    shas = sorted({r[1] for r in rows if r[1] is not None})
    tagged = {sha: data.draw(st.lists(st.text(max_size=8) | st.sampled_from(["Tabby", "É"]),
                                      min_size=1, max_size=3)) for sha in shas}
    judged = data.draw(_judgements_of(rows))

    def run(sql: str, params: dict) -> list:
        if sql.startswith("SELECT j.sha256"):
            return [(sha, index, f"n{index:08d}", label, verdict, source, when, hides)
                    for sha in sorted(params.values())
                    for index, (verdict, label, source, when, hides) in sorted(judged.get(sha, {}).items())]
        assert sql.startswith("SELECT sha256, tag FROM tags")
        return [(sha, tag) for sha in sorted(params.values()) for tag in tagged.get(sha, [])]

    dicts = recordsql.record_dicts(run, rows)
    assert recordjson.record_json(run, rows) == [json.dumps(d, ensure_ascii=False) for d in dicts]


def test_the_distinct_tag_keys_come_one_index_step_per_key(store, tmp_path):
    """Every search lists the distinct tag keys: from the tag_key index one step per
    key (not a scan of every tag row: two million rows of imported keywords took
    0.07 s of every search), and the same keys as SELECT DISTINCT."""
    from sqlalchemy import text

    from labelsd.serve.tagmatch import DISTINCT_TAG_KEYS

    found = add_images(store, {str(tmp_path / f"{i}.jpg"): [(281, 0.5)] for i in range(12)})
    for i, path in enumerate(sorted(found.values())):
        tags.add_tags(store, path, ["Garden", "garden party", f"Year {i % 3}", "Ünï ✓"])
    with store.read() as session:
        loose = [row[0] for row in session.execute(text(DISTINCT_TAG_KEYS))]
        distinct = [row[0] for row in session.execute(text("SELECT DISTINCT tag_key FROM tags"))]
        assert sorted(loose) == sorted(distinct) and len(loose) == 6
        if store.dialect == "sqlite":
            plan = [row[3] for row in session.execute(text("EXPLAIN QUERY PLAN " + DISTINCT_TAG_KEYS))]
            assert not [step for step in plan if step.startswith("SCAN tags")], plan
    assert query.matching_tag_keys(as_reader(store), "gardens") == ("garden", "garden party")


def test_stats_counts_tags_without_sorting_them(store, tmp_path, monkeypatch):
    """`labels stats` counts distinct tags and tagged contents each from its own index
    (SQLite sorted both in temporary B-trees when asked together: 2 million tag rows,
    0.82 s of the command's 1.8)."""
    import sqlite3

    found = add_images(store, {str(tmp_path / f"{i}.jpg"): [(281, 0.5)] for i in range(6)})
    for i, path in enumerate(sorted(found.values())):
        tags.add_tags(store, path, ["Garden", f"year {i % 2}"])
    reader = open_reader(store.db)
    try:
        statements = counting_statements(reader, monkeypatch)
        result = query.stats(reader)
        assert (result.tags, result.tagged_contents) == (3, 6)
        if store.dialect == "sqlite":
            conn = sqlite3.connect(store.db)
            try:
                for sql in statements:
                    if "FROM tags" in sql:
                        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, {})]
                        assert not [s for s in plan if "TEMP B-TREE" in s], (sql, plan)
            finally:
                conn.close()
    finally:
        reader.close()


def test_tag_counts_count_copies_missing_paths_and_imports_as_the_plain_join_does(
        store, tmp_path, monkeypatch):
    """`labels tags` counts per tag key: images (every path of every content carrying
    it, copies and missing files included), contents, and contents where it was
    imported; computed content by content, it must agree with the plain join of
    every tag row to its paths (the reference, counted here in Python)."""
    from sqlalchemy import text

    names = [str(tmp_path / f"{n}.jpg") for n in ("a", "a-copy", "b", "c", "gone")]
    found = add_images(store, {n: [(281, 0.5)] for n in names},
                       sha_of={names[0]: "a" * 64, names[1]: "a" * 64})
    a, _copy, b, c, gone = (found[n] for n in names)
    tags.add_tags(store, a, ["Garden", "Paris 2019"])
    tags.add_tags(store, b, ["garden", "Beach"])
    tags.add_tags(store, c, ["Paris 2019"])
    tags.add_tags(store, gone, ["Beach"])
    contents.mark_missing(store, [gone])
    with store.write() as session:  # as if read from the photos' own keywords
        session.execute(text("UPDATE tags SET imported = TRUE WHERE tag_key = 'paris 2019' "
                             "OR (tag_key = 'garden' AND sha256 = :s)"), {"s": "a" * 64})
    reader = as_reader(store)
    statements = counting_statements(reader, monkeypatch)
    counted = query.tag_counts(reader)
    with store.read() as session:
        tag_rows = session.execute(text("SELECT tag_key, tag, sha256, imported FROM tags")).all()
        paths_of = dict(session.execute(text(
            "SELECT sha256, count(*) FROM paths GROUP BY sha256")).all())
    reference: dict[str, dict] = {}
    for key, tag, sha, imported in tag_rows:
        row = reference.setdefault(key, {"tag": tag, "count": 0, "contents": 0, "imported": 0,
                                         "key": key})
        row["tag"] = min(row["tag"], tag)
        row["count"] += paths_of.get(sha, 0)
        row["contents"] += 1
        row["imported"] += bool(imported)
    ordered = sorted(reference.values(), key=lambda r: (-r["count"], r.pop("key")))
    assert counted == ordered
    if store.dialect == "sqlite":  # nothing sorted per key to count distinct contents
        with store.engine.connect() as conn:
            plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statements[0])]
        assert not [step for step in plan if "count(DISTINCT)" in step], plan
    assert [(r["tag"].casefold(), r["count"], r["contents"], r["imported"]) for r in counted] == [
        ("garden", 3, 2, 1), ("paris 2019", 3, 2, 2), ("beach", 2, 2, 0)]
