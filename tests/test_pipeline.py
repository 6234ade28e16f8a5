"""The pipeline over a real SQLite store and a real (random-weights) InceptionV3."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
from sqlalchemy import select

from imagegen import make_image, make_not_an_image, make_truncated_jpeg
from labelsd import records
from labelsd.events import Events
from labelsd.model.classifier import load_classifier
from labelsd.pipeline.runner import Pipeline
from labelsd.store import workqueue
from labelsd.store.schema import QueueItem
from servicekit import wait_for

BIASED_CLASS = 281  # tabby: what conftest's biased weights put first


@pytest.fixture(scope="module")
def classifier(weights_files):
    return load_classifier(weights_files.legacy_h5, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def biased_classifier(weights_files):
    return load_classifier(weights_files.biased_h5, device="cpu", batch_size=4)


@pytest.fixture(autouse=True)
def _no_leaked_threads():
    yield
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("labelsd-pipeline")]
    assert not leaked, f"threads left running: {leaked}"


def enqueue(store, paths):
    stats = [(str(p), os.stat(p)) for p in paths]
    return workqueue.enqueue(store, [records.FileFacts(p, st.st_size, st.st_mtime_ns) for p, st in stats])


def run(store, classifier, node="test:1", **kwargs):
    with Pipeline(store, classifier, node, **kwargs) as pipe:
        assert pipe.wait_idle(120), "pipeline did not become idle"
    return pipe


def queue_rows(store):
    with store.read() as session:
        return session.execute(select(QueueItem.path, QueueItem.claimed_by)).all()


def test_formats_get_three_predictions(store, classifier, tmp_path):
    files = [make_image(tmp_path / name, seed=i, **kw) for i, (name, kw) in enumerate([
        ("a.jpg", {}), ("b.png", {"mode": "RGBA"}), ("c.webp", {}), ("d.gif", {"mode": "P"}),
        ("e.tiff", {"mode": "L"}), ("f.heic", {}), ("g.bmp", {})])]
    assert enqueue(store, files) == len(files)
    pipe = run(store, classifier)
    assert (pipe.done, pipe.failed, pipe.linked) == (len(files), 0, 0)
    for f in files:
        rec = store.record(str(f))
        assert rec.status == "done", (f, rec.error)
        assert [p.rank for p in rec.labels] == [1, 2, 3]
        assert rec.width and rec.height
    assert queue_rows(store) == []


def test_biased_weights_put_tabby_first(store, biased_classifier, tmp_path):
    files = [make_image(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    enqueue(store, files)
    run(store, biased_classifier)
    for f in files:
        rec = store.record(str(f))
        assert rec.labels[0].class_index == BIASED_CLASS
        assert rec.labels[0].label == "tabby"


def test_broken_file_fails_with_reason_and_the_rest_is_done(store, classifier, tmp_path):
    good = [make_image(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    truncated = make_truncated_jpeg(tmp_path / "cut.jpg")
    a_minute_ago = os.stat(truncated).st_mtime - 60  # done changing (one still being
    os.utime(truncated, (a_minute_ago, a_minute_ago))  # written is read again: test_hostile)
    text = make_not_an_image(tmp_path / "notes.png")
    enqueue(store, [*good, truncated, text])
    pipe = run(store, classifier)
    assert (pipe.done, pipe.failed) == (3, 2)
    assert store.record(str(truncated)).status == "failed"
    assert store.record(str(truncated)).error == "truncated JPEG"
    assert store.record(str(text)).error
    assert all(store.record(str(f)).status == "done" for f in good)


def test_same_bytes_are_classified_once(store, classifier, tmp_path):
    original = make_image(tmp_path / "cat.jpg", seed=42)
    copy = tmp_path / "copy-of-cat.jpg"
    shutil.copyfile(original, copy)
    enqueue(store, [original, copy])
    pipe = run(store, classifier)
    assert pipe.model_rows == 1
    assert pipe.done == 2
    a, b = store.record(str(original)), store.record(str(copy))
    assert a.sha256 == b.sha256 and a.labels == b.labels and a.status == "done"

    # a later copy links to the stored content without a model call
    later = tmp_path / "later.jpg"
    shutil.copyfile(original, later)
    enqueue(store, [later])
    pipe = run(store, classifier)
    assert (pipe.linked, pipe.model_rows) == (1, 0)
    assert store.record(str(later)).labels == a.labels


def test_file_deleted_after_enqueue_is_vanished_not_failed(store, classifier, tmp_path):
    keep = make_image(tmp_path / "keep.jpg", seed=1)
    gone = make_image(tmp_path / "gone.jpg", seed=2)
    enqueue(store, [keep, gone])
    gone.unlink()
    pipe = run(store, classifier)
    assert (pipe.done, pipe.failed, pipe.vanished) == (1, 0, 1)
    assert store.record(str(gone)) is None  # never read: forgotten
    assert store.record(str(keep)).status == "done"


def test_every_outcome_has_a_typed_kind_and_is_counted_once(store, tmp_path):
    """Each stage hands the writer an `OutcomeKind`, never a bare string, and every
    committed outcome adds to exactly one of the counters the status reports."""
    from test_fleet import StandInClassifier  # a fixed top-3: no TensorFlow

    written: list[records.Outcome] = []
    events = Events()
    events.listen("batch_written", written.extend)
    good = make_image(tmp_path / "good.jpg", seed=1)
    broken = make_not_an_image(tmp_path / "broken.jpg")
    gone = make_image(tmp_path / "gone.jpg", seed=2)
    enqueue(store, [good, broken, gone])
    gone.unlink()
    first = run(store, StandInClassifier(), events=events, decode_workers=1)
    copy = tmp_path / "copy.jpg"
    shutil.copyfile(good, copy)
    enqueue(store, [copy])
    second = run(store, StandInClassifier(), events=events, decode_workers=1)

    assert {type(o.kind) for o in written} == {records.OutcomeKind}
    assert sorted(o.kind.name for o in written) == ["BAD_IMAGE", "CLASSIFIED", "LINKED", "VANISHED"]
    counts = [(p.done, p.linked, p.failed, p.vanished, p.retried, p.batches) for p in (first, second)]
    assert counts[0][:5] == (1, 0, 1, 1, 0) and counts[1][:5] == (0, 1, 0, 0, 0)
    assert all(batches >= 1 for *_, batches in counts)


def test_stop_mid_run_hands_back_unprocessed_claims(store, classifier, tmp_path):
    files = [make_image(tmp_path / f"{i:03}.jpg", seed=i) for i in range(40)]
    enqueue(store, files)
    pipe = Pipeline(store, classifier, "test:stop", batch_size=4, decode_workers=2)
    pipe.start()
    # a short interval: stop soon after the first batch, while most files are still queued
    wait_for(lambda: pipe.done >= 1, 60, "a first batch", interval=0.02)
    pipe.stop()
    pipe.stop()  # twice is fine
    assert not any(t.is_alive() for t in pipe._threads)
    rows = queue_rows(store)
    assert rows, "stopped after everything was done: make the run longer"
    assert all(claimed_by is None for _, claimed_by in rows)
    assert pipe.done + len(rows) == len(files)
    assert len(workqueue.claim(store, "test:other", 100)) == len(rows)  # claimable again


def test_in_flight_stays_bounded(store, classifier, tmp_path):
    # 200 queued files over 20 distinct contents: the model sees each content about once
    (tmp_path / "src").mkdir()
    (tmp_path / "in").mkdir()
    sources = [make_image(tmp_path / "src" / f"{i}.png", seed=i, size=(32, 24)) for i in range(20)]
    files = []
    for i in range(200):
        dest = tmp_path / "in" / f"{i:03}.png"
        shutil.copyfile(sources[i % 20], dest)
        files.append(dest)
    enqueue(store, files)
    pipe = run(store, classifier, batch_size=4, decode_workers=2)
    assert pipe.max_in_flight == 2 * 4 + 2
    assert 0 < pipe.max_in_flight_seen <= pipe.max_in_flight
    assert pipe.done + pipe.linked == 200
    assert pipe.model_rows < 200
    assert store.counts()["done"] == 200


def test_wake_claims_new_work_without_waiting_for_the_idle_timeout(store, classifier, tmp_path):
    with Pipeline(store, classifier, "test:wake", idle_wait_s=30) as pipe:
        assert pipe.wait_idle(10)
        healthy = pipe.last_progress
        f = make_image(tmp_path / "late.jpg", seed=9)
        enqueue(store, [f])
        pipe.wake()
        wait_for(lambda: pipe.done == 1, 20, "the woken claim", interval=0.02)
        assert pipe.last_progress >= healthy
    assert store.record(str(f)).status == "done"


def test_batch_size_defaults_to_the_models_own(weights_files, classifier):
    import labelsd.model.classifier as model

    auto = load_classifier(weights_files.legacy_h5, device="cpu", batch_size=None, warm=False)
    assert auto.batch_size == model.BATCH_SIZE_CPU == 8  # a GPU would get BATCH_SIZE_GPU
    assert model.BATCH_SIZE_GPU == 32
    pipe = Pipeline(None, classifier, "test:auto")  # never started: nothing touches the store
    assert pipe.batch_size == classifier.batch_size == 4
    assert pipe.decode_workers == len(os.sched_getaffinity(0))


def test_tensorflow_threads_follow_the_cores_this_process_may_use():
    from labelsd.model.classifier import cpu_threads

    intra, inter = cpu_threads()
    assert intra == len(os.sched_getaffinity(0))
    assert inter == 1  # measured faster than one per core (labelsd.model.classifier.INTER_OP_THREADS)


def test_timeline_shows_what_the_model_did(store, classifier, tmp_path):
    from labelsd.pipeline.timeline import Timeline

    files = [make_image(tmp_path / f"{i}.jpg", seed=i, size=(640, 480)) for i in range(9)]
    enqueue(store, files)
    timeline = Timeline()
    pipe = run(store, classifier, timeline=timeline)
    assert pipe.done == 9
    kinds = {s.kind for s in timeline.spans}
    assert kinds == {"read", "decode", "forward", "write"}
    summary = timeline.model_summary()
    assert sum(summary["batch_sizes"]) == pipe.model_rows == 9
    assert max(summary["batch_sizes"]) <= classifier.batch_size
    assert 0 < summary["busy_fraction"] <= 1
    assert summary["busy_s"] <= summary["window_s"] + 1e-6
