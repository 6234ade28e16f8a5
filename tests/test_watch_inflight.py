"""A photo renamed or deleted while its batch is in the model (issue 14, item 6):
the writer must not bring the old path back. Real inotify Watcher, real
pipeline, the real (random-weights) InceptionV3 held at a gate until the file
has moved."""

from __future__ import annotations

import os
import threading

import pytest

from imagegen import make_image
from labelsd.model.classifier import load_classifier
from labelsd.pipeline.runner import Pipeline
from labelsd.watch.watcher import Watcher
from servicekit import wait_for

DEADLINE_S = 60


@pytest.fixture(scope="module")
def classifier(weights_files):
    return load_classifier(weights_files.legacy_h5, device="cpu", batch_size=4)


class GatedModel:
    """The classifier, but each forward waits at a gate the test opens."""

    def __init__(self, inner):
        self._inner = inner
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def classify(self, batch):
        self.entered.set()
        assert self.gate.wait(DEADLINE_S), "the test never opened the gate"
        return self._inner.classify(batch)


def path_rows(store) -> dict[str, tuple]:
    with store.read() as session:
        return {row[0]: row[1:] for row in session.execute(
            __import__("sqlalchemy").text("SELECT path, sha256, missing FROM paths"))}


@pytest.mark.parametrize("how", ["renamed", "deleted", "moved to another folder"])
def test_file_gone_while_in_the_model_leaves_no_phantom(store, classifier, tmp_path, how):
    root = tmp_path / "inbox"
    (root / "sub").mkdir(parents=True)
    model = GatedModel(classifier)
    with Pipeline(store, model, "test:1") as pipe, \
            Watcher(store, [str(root)], on_enqueued=pipe.wake, settle_s=0.2) as watcher:
        wait_for(lambda: str(root) in watcher.roots, DEADLINE_S, "the watch")
        photo = make_image(root / "a.jpg", seed=4)
        assert model.entered.wait(DEADLINE_S), "the photo never reached the model"
        if how == "renamed":
            new = root / "b.jpg"
            os.rename(photo, new)
        elif how == "moved to another folder":
            new = root / "sub" / "a.jpg"
            os.rename(photo, new)
        else:
            new = None
            photo.unlink()
        wait_for(lambda: str(photo) not in path_rows(store)
                 or path_rows(store)[str(photo)][1], DEADLINE_S, "the watcher to see the change")
        if new is not None:
            wait_for(lambda: str(new) in path_rows(store), DEADLINE_S, "the new path")
        model.gate.set()
        assert pipe.wait_idle(DEADLINE_S)
    rows = path_rows(store)
    old = rows.get(str(photo))
    assert old is None or old[1], f"phantom: {photo} is back as present ({old})"
    if new is not None:
        rec = store.record(str(new))
        assert rec.status == "done" and rec.sha256, rec
