"""A model switch: labels record their model, what another model labelled is queued to
be labelled again (and kept out of search meanwhile), and the new labels replace the old."""

from __future__ import annotations

from labelsd import records
from labelsd.paths import canonical_path
from labelsd.records import Prediction
from labelsd.serve.query import search
from labelsd.store import contents, relabel, workqueue

TABBY = [Prediction(1, "tabby", "n02123045", 281, 0.7),
         Prediction(2, "tiger cat", "n02123159", 282, 0.2),
         Prediction(3, "Egyptian cat", "n02124075", 285, 0.05)]
MOPED = [Prediction(1, "moped", "n03785016", 665, 0.5),
         Prediction(2, "motor scooter", "n03791053", 670, 0.3),
         Prediction(3, "crash helmet", "n03127747", 518, 0.02)]
INCEPTION, LITE = "InceptionV3/imagenet", "EfficientNetLite0/imagenet"


def label(store, path, sha, model, preds):
    """Drive one path through the queue as the pipeline does, labelled by `model`."""
    workqueue.enqueue(store, [records.FileFacts(path, 10, 1)], force=True)
    claimed = workqueue.claim(store, "test-node", 100)
    claims = [c for c in claimed if c.path == canonical_path(path)]
    workqueue.release_claims(store, "test-node", [c.id for c in claimed if c not in claims])
    assert claims, f"{path} was not claimable"
    contents.record_outcomes(store, "test-node", [records.Outcome(
        claims[0], "classified", sha256=sha, size=10, mtime_ns=1, width=64, height=48,
        format="JPEG", model=model, predictions=list(preds))])


def test_records_say_which_model_labelled_them(store, tmp_path):
    path = str(tmp_path / "cat.jpg")
    label(store, path, "a" * 64, LITE, TABBY)
    rec = store.record(path)
    assert rec.model == LITE and rec.to_dict()["model"] == LITE


def test_content_of_another_model_is_not_done_for_this_one(store, tmp_path):
    label(store, str(tmp_path / "a.jpg"), "a" * 64, INCEPTION, TABBY)
    shas = ["a" * 64]
    assert contents.content_status(store, shas) == {"a" * 64: "done"}
    assert contents.content_status(store, shas, "InceptionV3/1234abcd") == {"a" * 64: "done"}
    assert contents.content_status(store, shas, LITE) == {"a" * 64: "relabel"}


def test_switch_queues_other_models_paths_keeps_them_out_of_search_then_replaces(store, tmp_path):
    cat, bike, gone = (str(tmp_path / n) for n in ("cat.jpg", "bike.jpg", "gone.jpg"))
    label(store, cat, "a" * 64, INCEPTION, TABBY)
    label(store, bike, "b" * 64, INCEPTION, TABBY)  # the old model got this one wrong
    label(store, gone, "c" * 64, INCEPTION, TABBY)
    contents.mark_missing(store, [gone])  # nothing to read again: keeps its labels
    assert {r.path for r in search(store, "cat")} == {cat, bike}

    assert relabel.other_model_paths(store, INCEPTION) == []
    assert relabel.other_model_paths(store, LITE, under=str(tmp_path / "elsewhere")) == []
    assert relabel.queue_other_models(store, LITE) == 2
    assert relabel.queue_other_models(store, LITE) == 0  # queued already
    assert search(store, "cat") == []  # no mixing: the old model's labels wait
    assert store.record(cat).status == "pending" and store.record(cat).model == INCEPTION

    label(store, cat, "a" * 64, LITE, TABBY)
    label(store, bike, "b" * 64, LITE, MOPED)
    assert [r.path for r in search(store, "cat")] == [cat]
    bike_rec = store.record(bike)
    assert bike_rec.model == LITE and [p.label for p in bike_rec.labels][0] == "moped"
    assert store.record(gone).model == INCEPTION
    assert relabel.other_model_paths(store, LITE) == []


def test_a_linked_copy_does_not_overwrite_and_same_family_is_kept(store, tmp_path):
    a = str(tmp_path / "a.jpg")
    label(store, a, "a" * 64, INCEPTION, TABBY)
    label(store, a, "a" * 64, "InceptionV3/other-weights", MOPED)  # same model family: kept
    assert [p.label for p in store.record(a).labels][0] == "tabby"
    assert relabel.model_family("InceptionV3/imagenet") == "InceptionV3"
    assert relabel.same_model(None, LITE)  # unknown: never relabelled
