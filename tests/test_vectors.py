"""The stored form of an embedding (labelsd.vectors): the codec measured against
float32, the vector file and its catch-up from the database, and the exact scans;
the writer's vectors and the backfill's walk on SQLite and PostgreSQL. No model."""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from labelsd.records import Outcome, OutcomeKind
from labelsd.store import contents, embeddings, migrations
from labelsd.store.engine import open_store
from labelsd.vectors import codec, library, matrix, scan
from vectorkit import MODEL, claim, fill, sha_of, synthetic_features

# ---- the codec --------------------------------------------------------------------


def test_the_projection_is_fixed_forever():
    """The same bits on every machine and numpy: SHAKE-256 of the seed, not a RNG. A
    change here is a new CODEC (old vectors would otherwise be compared with new ones)."""
    p = codec.projection(1280)
    assert p.shape == (1280, codec.DIM) and set(np.unique(p)) == {-1 / 16, 1 / 16}
    assert hashlib.sha256(np.signbit(p).tobytes()).hexdigest()[:16] == "d1d9e4533a162dde"
    assert codec.CODEC == "rp256-int8/1"


def test_codes_are_int8_and_scale_free():
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_normal((3, 2048)), 0).astype(np.float32)
    a, b = codec.encode(x), codec.encode(x * 7.5)
    assert a.dtype == np.int8 and a.shape == (3, codec.DIM) and np.abs(a).max() == 127
    np.testing.assert_array_equal(a, b)
    assert codec.cosine(a[0], a[0]) == pytest.approx(1.0)
    zero = codec.encode(np.zeros((1, 2048), np.float32))
    assert not zero.any() and codec.inverse_norms(zero)[0] == 0
    assert codec.from_bytes(codec.to_bytes(a[1])).tolist() == a[1].tolist()
    with pytest.raises(ValueError):
        codec.from_bytes(b"\0" * 10)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="BLAS runs one thread on one core anyway")
def test_encoding_leaves_no_thread_spinning_beside_the_model():
    """The writer encodes every batch's vectors while the model and the decoders use the
    cores: a BLAS matmul there left OpenBLAS's threads spinning for ~100 ms after each
    call (a core's worth, measured), which cost the service 6% of its throughput with
    embeddings on (bench/similarbench.py (a): 0.935 of without). Encoding uses no
    thread of its own: the process's CPU time while it sleeps right after stays ~0."""
    import subprocess
    import sys

    probe = ("import time, numpy as np\n"
             "from labelsd.vectors import codec\n"
             "x = np.random.default_rng(1).random((8, 2048), dtype=np.float32)\n"
             "spun = []\n"
             "for _ in range(3):\n"
             "    codec.encode(x); cpu = time.process_time(); time.sleep(0.1)\n"
             "    spun.append(time.process_time() - cpu)\n"
             "print(min(spun))\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert float(out.stdout) < 0.02, f"{float(out.stdout) * 1000:.0f} ms of CPU spent while encoding was done"


def _top10(query: np.ndarray, library_: np.ndarray, skip: np.ndarray) -> np.ndarray:
    s = query @ library_.T
    s[np.arange(len(skip)), skip] = -np.inf
    return np.argsort(-s, axis=1)[:, :10]


def test_compact_vectors_keep_recall_at_10_against_float32():
    """Over a synthetic library of 10,000 (vectorkit.synthetic_features), the ten
    nearest by the stored int8 codes are nine in ten of the ten nearest by float32
    cosine on the full features (measured 0.92; 0.88 at 128 dimensions)."""
    features = synthetic_features(10_000)
    full = features / np.linalg.norm(features, axis=1, keepdims=True)
    codes = codec.encode(features)
    units = codes.astype(np.float32) * codec.inverse_norms(codes)[:, None]
    queries = np.random.default_rng(3).choice(len(full), 300, replace=False)
    truth = _top10(full[queries], full, queries)
    got = _top10(units[queries], units, queries)
    recall = np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth, got)])
    assert recall >= 0.9, recall
    assert codes.nbytes / len(codes) == 256  # bytes a photo, against 5,120 for float32


# ---- the vector file --------------------------------------------------------------


def _records(n: int, start_id: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n, matrix.RECORD)
    out["code"] = rng.integers(-127, 128, (n, codec.DIM))
    out["inv_norm"] = codec.inverse_norms(out["code"])
    out["id"] = np.arange(start_id, start_id + n)
    out["sha"] = [np.frombuffer(bytes.fromhex(sha_of(i)), np.uint8) for i in range(start_id, start_id + n)]
    return out


def test_the_file_round_trips_appends_and_survives_a_torn_header(tmp_path):
    path = tmp_path / "v"
    header = matrix.write_file(path, matrix.Header(3, "tok"), iter([_records(5)]), 0o640)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    mapped = matrix.open_file(path, 3, "tok")
    assert (mapped.header.count, mapped.header.max_id) == (5, 5)
    assert matrix.open_file(path, 3, "another database") is None
    assert matrix.open_file(path, 4, "tok") is None
    assert matrix.append(path, header, _records(2, 6))
    assert not matrix.append(path, header, _records(2, 8))  # someone appended since
    again = matrix.open_file(path, 3, "tok")
    assert again.header.count == 7 and again.records["id"].tolist() == list(range(1, 8))
    assert mapped.records["id"].tolist() == list(range(1, 6))  # the earlier mapping is whole
    # a crash tore the newer header slot: the older one still reads, with its 5 records
    with open(path, "r+b") as f:
        f.seek((0, 2048)[again.header.generation % 2])  # the slot the last append wrote
        f.write(b"\xff" * 64)
    assert matrix.open_file(path, 3, "tok").header.count == 5
    # a header that counts records the file does not hold
    with open(path, "r+b") as f:
        f.truncate(matrix.HEADER_BYTES + 2 * matrix.RECORD.itemsize)
    assert matrix.open_file(path, 3, "tok") is None


def test_a_symlink_in_the_files_place_is_replaced_never_followed(tmp_path):
    """In a library shared with a group, a member could put a link where the vector file
    goes: it is neither read nor written through, and a rebuild replaces the link."""
    target = tmp_path / "someone-elses-file"
    path = tmp_path / "v"
    header = matrix.write_file(tmp_path / "elsewhere", matrix.Header(1, "t"), [_records(3)], 0o600)
    (tmp_path / "elsewhere").rename(target)
    path.symlink_to(target)
    before = target.read_bytes()
    assert matrix.open_file(path, 1, "t") is None
    assert not matrix.append(path, header, _records(1, 4))
    matrix.write_file(path, matrix.Header(1, "t"), [_records(2)], 0o600)
    assert not path.is_symlink() and target.read_bytes() == before


def test_an_append_to_a_file_replaced_meanwhile_is_refused(tmp_path):
    path = tmp_path / "v"
    header = matrix.write_file(path, matrix.Header(1, "t"), [_records(3)], 0o600)
    matrix.write_file(path, matrix.Header(1, "t"), [_records(3)], 0o600)  # a rebuild, renamed over
    os.utime(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert matrix.read_header(fd).count == 3
    finally:
        os.close(fd)
    assert matrix.append(path, header, _records(1, 4))  # same header: the rebuild matches it
    assert matrix.open_file(path, 1, "t").header.count == 4


# ---- catching up with the database (SQLite and PostgreSQL) -------------------------


def _load(store, where=None):
    with store.rows() as run:
        space = library.find_space(run, model=MODEL)
        return library.load(run, space, where)


@pytest.fixture
def codes():
    return codec.encode(synthetic_features(300, scenes=30))


def test_the_file_catches_up_and_repairs_from_the_database(db_url, store, codes, tmp_path):
    where = library.Location(None, tmp_path / "cache" / "lib")
    fill(store, "/p", codes[:100])
    first = _load(store, where)
    assert len(first) == 100 and first.path is not None and first.path.parent == tmp_path / "cache"
    fill(store, "/p", codes[100:150], start=100)  # written since: appended
    second = _load(store, where)
    assert len(second) == 150 and len(second.parts) == 2
    assert matrix.open_file(second.path, second.space.id, second.space.token).header.count == 150
    with store.write() as session:  # contents deleted: their vectors go by cascade
        session.execute(text("DELETE FROM paths WHERE sha256 IN (:a, :b)"), {"a": sha_of(3), "b": sha_of(120)})
        session.execute(text("DELETE FROM contents WHERE sha256 IN (:a, :b)"), {"a": sha_of(3), "b": sha_of(120)})
    third = _load(store, where)
    shas = set(third.sha256_at(range(len(third))))
    assert len(third) == 148 and sha_of(3) not in shas and sha_of(120) not in shas
    assert matrix.open_file(third.path, third.space.id, third.space.token).header.count == 148
    in_memory = _load(store)
    assert sorted(in_memory.sha256_at(range(148))) == sorted(shas)


def test_a_file_beside_a_shared_library_takes_the_database_files_mode(tmp_path, codes):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o2770)
    with open_store(str(folder / "labels.db")) as store:
        fill(store, "/p", codes[:10])
        vectors = _load(store, library.location(store.where, "sqlite"))
    assert vectors.path == folder / "labels.db.vectors1"
    assert stat.S_IMODE(vectors.path.stat().st_mode) == 0o660


def test_scans_match_brute_force(codes, tmp_path):
    recs = np.empty(len(codes), matrix.RECORD)
    recs["code"], recs["inv_norm"] = codes, codec.inverse_norms(codes)
    recs["id"] = np.arange(1, len(codes) + 1)
    recs["sha"] = [np.frombuffer(bytes.fromhex(sha_of(i)), np.uint8) for i in range(len(codes))]
    vectors = library.VectorSet(library.Space(1, MODEL, codec.CODEC, "t"), [recs[:123], recs[123:]])
    units = codes.astype(np.float32) * codec.inverse_norms(codes)[:, None]
    truth = units @ units[7]
    s = scan.scores(vectors, units[7], workers=2)
    np.testing.assert_allclose(s, truth, atol=1e-5)
    assert [r for r, _ in scan.nearest(vectors, units[7], 5)] == list(np.argsort(-truth, kind="stable")[:5])
    pairs = {(int(i), int(j)) for a, b, _ in scan.pairs_above(vectors, 0.8, block=64) for i, j in zip(a, b)}
    full = units @ units.T
    expected = {(i, j) for i in range(len(codes)) for j in range(i + 1, len(codes)) if full[i, j] >= 0.8}
    assert pairs == expected and expected
    # a SHA-256 ending in zero bytes survives (sha_of(0) is all zeros)
    assert vectors.sha256_at([0, 200]) == [sha_of(0), sha_of(200)]
    assert vectors.rows_of([sha_of(200), sha_of(0), "f" * 64]).tolist() == [0, 200]


# ---- the writer's vectors, the backfill's walk --------------------------------------


def test_a_model_switch_replaces_a_vector_and_the_same_model_keeps_the_first(store, codes):
    fill(store, "/p", codes[:2])
    other = [Outcome(claim(-1, "/p/img00000.jpg", embed_only=sha_of(0)), OutcomeKind.EMBEDDED,
                     sha256=sha_of(0), model=MODEL, embedding=codec.to_bytes(codes[5]))]
    contents.record_outcomes(store, "n", other)  # same space: the first vector stays
    switched = [Outcome(claim(-2, "/p/img00001.jpg", embed_only=sha_of(1)), OutcomeKind.EMBEDDED,
                        sha256=sha_of(1), model="InceptionV3/imagenet", embedding=codec.to_bytes(codes[6]))]
    contents.record_outcomes(store, "n", switched)
    gone = [Outcome(claim(-3, "/p/gone.jpg", embed_only=sha_of(99)), OutcomeKind.EMBEDDED,
                    sha256=sha_of(99), model=MODEL, embedding=codec.to_bytes(codes[7]))]
    contents.record_outcomes(store, "n", gone)  # its content is gone: dropped, nothing fails
    with store.read() as session:
        rows = dict(session.execute(text(
            "SELECT e.sha256, s.model FROM embeddings e JOIN embedding_spaces s ON s.id = e.space")).all())
        vector0 = bytes(session.execute(text("SELECT vector FROM embeddings WHERE sha256 = :s"),
                                        {"s": sha_of(0)}).scalar_one())
        queue = session.execute(text("SELECT count(*) FROM queue")).scalar_one()
    assert rows == {sha_of(0): MODEL, sha_of(1): "InceptionV3/imagenet"}
    assert vector0 == codec.to_bytes(codes[0]) and queue == 0


def test_the_backfill_walk_finds_what_lacks_a_vector_of_the_model(store, codes, tmp_path):
    fill(store, "/photolib/a", None, n=5)
    fill(store, "/photolib/b", codes[5:8], start=5)
    fill(store, "/elsewhere", None, n=2, start=8)
    with store.write() as session:
        session.execute(text("UPDATE paths SET missing = :t WHERE path = '/photolib/a/img00004.jpg'"), {"t": True})
    found, after = [], ""
    while True:
        rows = embeddings.contents_to_embed(store, MODEL, after, 3)
        found += rows
        if len(rows) < 3:
            break
        after = rows[-1][2]
    assert [(sha, path) for sha, path, _ in found] == [
        (sha_of(i), None if i == 4 else f"{'/photolib/a' if i < 5 else '/elsewhere'}/img{i:05}.jpg")
        for i in (0, 1, 2, 3, 4, 8, 9)]
    under = embeddings.contents_to_embed(store, MODEL, "", 10, under="/photolib")
    assert [path for _, path, _ in under] == [f"/photolib/a/img{i:05}.jpg" for i in range(4)]
    assert embeddings.count_to_embed_under(store, "EfficientNetLite0", "/photolib") == 4
    assert embeddings.count_to_embed_under(store, "InceptionV3", "/photolib") == 7
    # another model's vectors do not count as this one's
    assert len(embeddings.contents_to_embed(store, "InceptionV3/imagenet", "", 20)) == 10


def test_migration_9_adds_embeddings_to_a_library_of_schema_7(tmp_path):
    db = tmp_path / "seven.db"
    engine = create_engine(f"sqlite:///{db}")
    assert migrations.migrate(engine, target=7) == [1, 2, 3, 4, 5, 6, 7]
    engine.dispose()
    with open_store(str(db)) as store:
        fill(store, "/p", None, n=3)
        with store.read() as session:
            versions = session.execute(text("SELECT version FROM schema_migrations")).scalars().all()
            assert session.execute(text("SELECT count(*) FROM embeddings")).scalar_one() == 0
        assert max(versions) == 9 and 9 in versions
        assert len(embeddings.contents_to_embed(store, MODEL, "", 10)) == 3


def test_db_copy_carries_the_vectors_into_the_targets_own_spaces(tmp_path, codes):
    from labelsd.store.copy import copy_library

    with open_store(str(tmp_path / "a.db")) as source, open_store(str(tmp_path / "b.db")) as target:
        fill(source, "/p", codes[:20])
        with target.write() as session:  # the target already has another space: ids differ
            embeddings.space_id(session, "InceptionV3/imagenet", codec.CODEC)
        copied = copy_library(source, target)
        assert copied["embeddings"] == 20
        assert sorted(_load(source).sha256_at(range(20))) == sorted(_load(target).sha256_at(range(20)))
        with target.read() as session:
            row = session.execute(text("SELECT s.model, e.vector FROM embeddings e JOIN embedding_spaces s "
                                       "ON s.id = e.space WHERE e.sha256 = :s"), {"s": sha_of(3)}).one()
        assert row[0] == MODEL and bytes(row[1]) == codec.to_bytes(codes[3])
        assert copy_library(source, target, merge=True)["embeddings"] == 0  # idempotent


def test_the_counters_the_triggers_keep_match_the_rows(store, codes):
    """`labels status` and every vector-file check read counters (migration 9's
    triggers), never a count over the table: they must agree with the rows through
    inserts, upserts that update, a model switch and deletions, on both databases."""
    from labelsd.vectors.spaces import counter

    fill(store, "/p", codes[:30])
    fill(store, "/p", None, n=5, start=30)
    switched = [Outcome(claim(-i, f"/p/img{i:05}.jpg", embed_only=sha_of(i)), OutcomeKind.EMBEDDED,
                        sha256=sha_of(i), model="InceptionV3/imagenet", embedding=codec.to_bytes(codes[i]))
                for i in range(1, 11)]
    contents.record_outcomes(store, "n", switched)
    fill(store, "/p", codes[:3], names=[f"/q/again{i}.jpg" for i in range(3)])  # same contents again
    with store.write() as session:
        session.execute(text("DELETE FROM paths WHERE sha256 = :s"), {"s": sha_of(20)})
        session.execute(text("DELETE FROM contents WHERE sha256 = :s"), {"s": sha_of(20)})
    with store.rows() as run:
        truth = dict(run("SELECT space, count(*) FROM embeddings GROUP BY space", {}))
        assert {s: counter(run, f"embeddings:{s}") for s in truth} == truth
        assert sorted(truth.values()) == [8, 21]  # 2 of the 10 switched back by the same contents labelled again
        assert counter(run, "contents") == run("SELECT count(*) FROM contents", {})[0][0] == 34
        assert library.progress(run, MODEL) == {"model": MODEL, "done": 21, "total": 34}


def test_a_reader_that_lost_the_race_to_append_leaves_the_file_to_the_winner(store, codes, tmp_path):
    """Two processes catching up at once (the service's keeper and `labels similar`):
    the second append finds the header moved on and leaves the file as the first made it
    (no rewrite of a file of a million rows); its own scan is whole all the same."""
    where = library.Location(None, tmp_path / "cache" / "lib")
    fill(store, "/p", codes[:100])
    path = _load(store, where).path
    space = _load(store).space
    stale = matrix.open_file(path, space.id, space.token)  # what a slower reader mapped
    fill(store, "/p", codes[100:120], start=100)
    inode = path.stat().st_ino
    winner = _load(store, where)  # appends the 20
    assert len(winner) == 120 and path.stat().st_ino == inode
    new = library._rows_after(lambda sql, p: _run(store, sql, p), winner.space, stale.header.max_id)
    loser = library.VectorSet(winner.space, [stale.records, new], path)
    library._persist(loser, where, stale, new, rewrite=False)
    again = matrix.open_file(path, winner.space.id, winner.space.token)
    assert path.stat().st_ino == inode and again.header.count == 120


def _run(store, sql, params):
    with store.rows() as run:
        return run(sql, params)


def test_the_services_keeper_writes_the_file_and_keeps_it_current(tmp_path, codes):
    from labelsd.events import Events
    from labelsd.vectors.keeper import VectorKeeper
    from servicekit import wait_for

    with open_store(str(tmp_path / "labels.db")) as store:
        fill(store, "/p", codes[:40])
        events = Events()
        keeper = VectorKeeper(store, MODEL, events, every_s=0.1).start()
        try:
            path = tmp_path / "labels.db.vectors1"
            wait_for(lambda: (m := matrix.open_file(path, 1, _load(store).space.token)) and m.header.count == 40,
                     30, "the file at start")
            fill(store, "/p", codes[40:60], start=40)
            events.emit("batch_written", [Outcome(claim(1), OutcomeKind.CLASSIFIED, embedding=b"x")])
            wait_for(lambda: matrix.open_file(path, 1, _load(store).space.token).header.count == 60,
                     30, "the file after a batch with vectors")
        finally:
            keeper.stop()
        assert not keeper._thread.is_alive() and keeper.syncs >= 2
