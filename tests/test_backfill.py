"""The backfill in process, with a stand-in model (no TensorFlow): `labels scan` fills
the vectors of a folder labelled before embeddings (the new photos are claimed first:
tests/test_backfill_service.py shows it under the real service); a file that changed
since it was labelled is labelled anew, not backfilled, one that is gone is passed
over; nothing goes through the model twice."""

from __future__ import annotations

import numpy as np
from sqlalchemy import text

from imagegen import make_image
from labelsd.pipeline.backfill import Backfill
from labelsd.pipeline.scan import plan_scan, scan_folder
from labelsd.store.engine import open_store
from servicekit import sha256_of
from vectorkit import TOP3, labelled_before

MODEL = "StandIn/1"


class StandInModel:
    """Top-3 fixed, the embedding made from the pixels (so copies agree), and a record
    of what went through the forward."""

    name = MODEL
    batch_size = 4
    ladder = None
    device = "cpu"

    def __init__(self):
        self.seen: list[float] = []

    def decode(self, data):
        from labelsd.model.decode import decode_image

        return decode_image(data, 32, lambda rgb: rgb.astype(np.float32) / 255)

    def classify(self, batch):
        self.seen += [float(x.mean()) for x in batch]
        pooled = np.maximum(np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :1280] - 0.3, 0)
        return [list(TOP3) for _ in batch], pooled


def _vectors(store) -> dict[str, int]:
    with store.read() as session:
        return dict(session.execute(text("SELECT sha256, id FROM embeddings")).all())


def test_scan_embeds_what_was_labelled_before_and_passes_over_changed_and_gone_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    old = [make_image(folder / f"old{i}.jpg", seed=i) for i in range(9)]
    with open_store(str(tmp_path / "labels.db")) as store:
        labelled_before(store, old, "StandIn/0")
        changed, gone = old[7], old[8]
        changed_sha, gone_sha = sha256_of(changed), sha256_of(gone)
        assert plan_scan(store, folder, MODEL).to_embed == 9
        make_image(changed, seed=99)  # new bytes: the scan queues it as changed, and labels it
        gone.unlink()
        new = [make_image(folder / f"new{i}.jpg", seed=50 + i) for i in range(2)]
        model = StandInModel()
        result = scan_folder(store, model, folder)
        assert (result.queued, result.labeled, result.embedded) == (3, 3, 7), result.summary()
        assert "7 of the unchanged embedded" in result.summary()
        vectors = _vectors(store)
        assert set(vectors) == {sha256_of(p) for p in [*old[:7], changed, *new]}
        assert changed_sha not in vectors and gone_sha not in vectors
        assert len(model.seen) == 10  # each photo once: 7 backfilled, 3 labelled
        kept = list(tmp_path.glob("labels.db.vectors*"))  # the scan leaves the vector file current
        assert len(kept) == 1 and kept[0].stat().st_size > 10 * 256
        # a second scan finds nothing to embed and loads nothing
        again = plan_scan(store, folder, MODEL)
        assert (again.to_embed, again.needs_model) == (0, False)


def test_a_backfill_walk_hands_each_content_once_and_skips_a_changed_file(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = [make_image(folder / f"p{i}.jpg", seed=i) for i in range(6)]
    copy = folder / "copy-of-p0.jpg"
    copy.write_bytes(photos[0].read_bytes())
    with open_store(str(tmp_path / "labels.db")) as store:
        labelled_before(store, [*photos, copy], "StandIn/0")
        walk = Backfill(store, MODEL)
        claims = walk.take(4) + walk.take(4) + walk.take(4)
        assert walk.finished and walk.take(4) == []
        assert sorted(c.embed_only for c in claims) == sorted({sha256_of(p) for p in photos})
        assert all(c.id < 0 for c in claims) and len({c.id for c in claims}) == len(claims)
        # under a folder: the walk goes by path, each content once
        under = Backfill(store, MODEL, under=str(folder))
        assert sorted(c.embed_only for c in under.take(10)) == sorted({sha256_of(p) for p in photos})
