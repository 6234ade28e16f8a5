"""Judgements and XMP sidecars are one idea (xmp/suppression.py): a label rejected in
labelsd leaves the sidecar's keywords for `labelsd:suppressed`; a label a person
removed in another program (or a sidecar suppressed) comes back as a rejection, from
`labels xmp write`, the service's sidecar thread, and a photo read with its sidecar."""

from __future__ import annotations

import hashlib

import pytest

from clikit import labels, ok
from imagegen import make_image
from labelsd import records
from labelsd.paths import canonical_path
from labelsd.serve import query
from labelsd.store import contents, judgements, workqueue
from labelsd.xmp.metadata import read_photo_meta
from labelsd.xmp.sidecar import write_sidecar
from labelsd.xmp.writer import refresh_sidecars
from test_search import names, predictions
from test_xmp import edit_elsewhere, make_photos, read_xmp, words

TABBY, TIGER_CAT = 281, 282


@pytest.fixture
def photos(store, tmp_path, monkeypatch):
    """tabby.jpg (tabby 90%, tiger cat 25%), unsure.jpg (nothing reaches 20%), dog.jpg."""
    return make_photos(store, tmp_path, monkeypatch)


def test_a_rejected_label_leaves_the_keywords_for_the_suppressed_list(db_url, store, photos):
    folder, paths = photos
    ok(labels(db_url, "xmp", "write"))
    sidecar = folder / "tabby.jpg.xmp"
    assert words(read_xmp(sidecar), "Xmp.dc.subject") == ["tabby", "tiger cat"]
    judgements.reject(store, [store.record(paths["tabby.jpg"]).sha256], TABBY)
    # unsure.jpg: nothing above the floor and no tag, so no sidecar (issue 31)
    assert ok(labels(db_url, "xmp", "write")).startswith("1 sidecar(s) written, 1 already")
    xmp = read_xmp(sidecar)
    assert words(xmp, "Xmp.dc.subject") == ["tiger cat"]
    assert words(xmp, "Xmp.lr.hierarchicalSubject") == ["labelsd|tiger cat"]
    assert words(xmp, "Xmp.digiKam.TagsList") == ["labelsd/tiger cat"]
    assert words(xmp, "Xmp.labelsd.suppressed") == ["tabby"]
    # read back, the sidecar says what the database says: nothing new to reject
    rec = store.record(paths["tabby.jpg"])
    assert refresh_sidecars([rec], 0.2, store=store).rejected == 0
    # taken back in labelsd (unreject lifts it), the label is written again
    judgements.unreject(store, [rec.sha256], TABBY)
    refresh_sidecars([store.record(paths["tabby.jpg"])], 0.2, lift=["tabby"], store=store)
    xmp = read_xmp(sidecar)
    assert words(xmp, "Xmp.dc.subject") == ["tabby", "tiger cat"] and "Xmp.labelsd.suppressed" not in xmp
    assert judgements.judgements_of(store, [rec.sha256]) == {}


def test_a_label_removed_in_another_program_is_imported_as_a_rejection(db_url, store, photos):
    folder, paths = photos
    ok(labels(db_url, "tag", paths["tabby.jpg"], "indoor"))
    ok(labels(db_url, "xmp", "write"))
    sidecar = folder / "tabby.jpg.xmp"
    # in digiKam the person removes the label tabby and the tag indoor
    edit_elsewhere(sidecar, "Xmp.dc.subject", ["tiger cat"])
    out = ok(labels(db_url, "xmp", "write"))
    assert "1 label(s) removed in another program now rejected" in out
    sha = store.record(paths["tabby.jpg"]).sha256
    found = judgements.judgements_of(store, [sha])[sha]
    assert [(j.label, j.verdict, j.source) for j in found] == [("tabby", "rejected", "xmp")]
    assert names(query.search(store, "tabby")) == ["unsure.jpg"]  # a tag is not a label
    rec = store.record(paths["tabby.jpg"])
    assert [p.label for p in rec.labels] == ["tiger cat", "Egyptian cat"] and rec.tags == ["indoor"]
    assert words(read_xmp(sidecar), "Xmp.labelsd.suppressed") == ["indoor", "tabby"]
    assert "another program" not in ok(labels(db_url, "xmp", "write"))  # once


def test_a_sidecar_never_overrides_a_label_confirmed_in_labelsd(store, photos):
    folder, paths = photos
    rec = store.record(paths["tabby.jpg"])
    judgements.confirm(store, [rec.sha256], TABBY)
    write_sidecar(rec.path, ["tabby", "tiger cat"], [])
    edit_elsewhere(folder / "tabby.jpg.xmp", "Xmp.dc.subject", ["tiger cat"])
    assert refresh_sidecars([store.record(rec.path)], 0.2, store=store).rejected == 0
    assert [j.verdict for j in judgements.judgements_of(store, [rec.sha256])[rec.sha256]] == ["confirmed"]


def test_a_confirmed_label_goes_into_the_sidecar_whatever_its_score(store, photos):
    folder, paths = photos
    rec = store.record(paths["unsure.jpg"])  # nothing reaches 0.2
    judgements.confirm(store, [rec.sha256], TIGER_CAT)
    refresh_sidecars([store.record(rec.path)], 0.2, store=store)
    assert words(read_xmp(folder / "unsure.jpg.xmp"), "Xmp.dc.subject") == ["tiger cat"]


def test_a_photo_read_with_a_sidecar_that_suppresses_a_label_arrives_with_it_rejected(store, tmp_path):
    """What the pipeline does with a new photo: its reader reads the sidecar's
    suppressed keywords (xmp/metadata.py), its writer stores those that name one of
    the labels the model gave as rejections (store/photometa.py)."""
    taken = make_image(tmp_path / "taken.jpg", seed=1)  # labelsd wrote tabby, digiKam removed it
    write_sidecar(str(taken), ["tabby"], ["garden"])
    edit_elsewhere(str(taken) + ".xmp", "Xmp.dc.subject", ["garden"])
    listed = make_image(tmp_path / "listed.jpg", seed=2)  # a sidecar that lists it suppressed
    write_sidecar(str(listed), [], [], rejected=["Tabby", "vacation"])
    metas = {p: read_photo_meta(p.read_bytes(), str(p)) for p in (taken, listed)}
    assert metas[taken].suppressed == ("tabby",) and metas[listed].suppressed == ("Tabby", "vacation")

    workqueue.enqueue(store, [records.FileFacts(str(p), 1, 1) for p in metas])
    claims = {c.path: c for c in workqueue.claim(store, "test-node", limit=10)}
    contents.record_outcomes(store, "test-node", [records.Outcome(
        claims[canonical_path(p)], "classified", sha256=hashlib.sha256(p.name.encode()).hexdigest(),
        size=1, mtime_ns=1, width=64, height=48, format="JPEG", model="test",
        predictions=predictions([(281, 0.9), (282, 0.05), (285, 0.02)]), meta=meta)
        for p, meta in metas.items()])
    for p in metas:
        rec = store.record(str(p))
        assert [p.label for p in rec.labels] == ["tiger cat", "Egyptian cat"]
        assert [(r.label, r.source) for r in rec.rejected] == [("tabby", "xmp")]
