"""What photos carry: EXIF date, camera and GPS, embedded XMP and IPTC keywords and a
sidecar's keywords, read by the pipeline (labelsd.xmp.metadata), stored with the
content (migration 3), shown by `labels show`, found by `labels search` (keywords
become imported tags) and filtered by `--since/--until/--camera`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import exiv2
import pytest
from typer.testing import CliRunner

from imagegen import make_image
from labels_cli.app import app
from labelsd import records
from labelsd.model.classifier import load_classifier
from labelsd.paths import canonical_path
from labelsd.pipeline.runner import Pipeline
from labelsd.records import PhotoMeta
from labelsd.store import contents, workqueue
from labelsd.xmp.metadata import read_photo_meta

runner = CliRunner()

PARIS = ("48/1 51/1 2400/100", "N", "2/1 21/1 300/100", "E")  # 48.8566667, 2.3508333
RIO = ("22/1 54/1 3000/100", "S", "43/1 10/1 3000/100", "W")  # -22.9083333, -43.175


def make_photo(path, *, seed: int = 0, taken: str | None = "2024:07:14 15:30:00",
               make: str | None = "Apple", model: str | None = "iPhone 13",
               gps: tuple | None = PARIS, iptc: tuple[str, ...] = (),
               xmp_subject: tuple[str, ...] = (), size=(96, 72)) -> Path:
    """A JPEG whose metadata is written by exiv2 the way a camera and a photo
    manager leave it: EXIF date/make/model/GPS, IPTC keywords, XMP dc:subject."""
    path = make_image(path, size=size, seed=seed)
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    exif, iptc_data, xmp = image.exifData(), image.iptcData(), image.xmpData()
    if taken:
        exif["Exif.Photo.DateTimeOriginal"] = taken
    if make:
        exif["Exif.Image.Make"] = make
    if model:
        exif["Exif.Image.Model"] = model
    if gps:
        lat, lat_ref, lon, lon_ref = gps
        exif["Exif.GPSInfo.GPSLatitudeRef"], exif["Exif.GPSInfo.GPSLatitude"] = lat_ref, lat
        exif["Exif.GPSInfo.GPSLongitudeRef"], exif["Exif.GPSInfo.GPSLongitude"] = lon_ref, lon
    for word in iptc:
        iptc_data.add(exiv2.IptcKey("Iptc.Application2.Keywords"), exiv2.StringValue(word))
    if xmp_subject:
        bag = exiv2.XmpArrayValue(exiv2.TypeId.xmpBag)
        for word in xmp_subject:
            bag.read(word)
        xmp.add(exiv2.XmpKey("Xmp.dc.subject"), bag)
    image.setExifData(exif)
    image.setIptcData(iptc_data)
    image.setXmpData(xmp)
    image.writeMetadata()
    return Path(path)


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- reading -------------------------------------------------------------------


def test_reads_date_camera_gps_and_keywords(tmp_path):
    photo = make_photo(tmp_path / "a.jpg", iptc=("beach", "Holiday"), xmp_subject=("sunset", "holiday"))
    meta = read_photo_meta(photo.read_bytes(), str(photo))
    assert meta == PhotoMeta(taken_at="2024-07-14T15:30:00", camera="Apple iPhone 13",
                             gps_lat=48.8566667, gps_lon=2.3508333,
                             keywords=("sunset", "holiday", "beach"))  # one spelling each


@pytest.mark.parametrize(("make", "model", "gps", "camera", "where"), [
    ("Canon", "Canon EOS R5", RIO, "Canon EOS R5", (-22.9083333, -43.175)),  # model names the make
    ("NIKON CORPORATION", "NIKON D750", None, "NIKON D750", (None, None)),
    ("samsung", "SM-G991B", None, "samsung SM-G991B", (None, None)),
    (None, None, None, None, (None, None)),
])
def test_camera_names_and_hemispheres(tmp_path, make, model, gps, camera, where):
    photo = make_photo(tmp_path / "a.jpg", make=make, model=model, gps=gps)
    meta = read_photo_meta(photo.read_bytes())
    assert (meta.camera, meta.gps_lat, meta.gps_lon) == (camera, *where)


def test_sidecar_keywords_are_read_but_not_the_ones_labelsd_wrote(tmp_path):
    from labelsd.xmp.sidecar import write_sidecar

    photo = make_photo(tmp_path / "a.jpg", iptc=("beach",))
    write_sidecar(str(photo), ["tabby"], ["vacation"])  # labelsd's own keywords
    sidecar = exiv2.ImageFactory.open(str(photo) + ".xmp")
    sidecar.readMetadata()
    xmp = sidecar.xmpData()
    it = xmp.findKey(exiv2.XmpKey("Xmp.dc.subject"))
    words = [it.toString(i) for i in range(it.count())] + ["Grandma"]  # another program adds one
    xmp.erase(it)
    bag = exiv2.XmpArrayValue(exiv2.TypeId.xmpBag)
    for w in words:
        bag.read(w)
    xmp.add(exiv2.XmpKey("Xmp.dc.subject"), bag)
    sidecar.setXmpData(xmp)
    sidecar.writeMetadata()
    meta = read_photo_meta(photo.read_bytes(), str(photo))
    assert meta.keywords == ("beach", "Grandma")


def test_nothing_to_read_is_none(tmp_path):
    plain = make_image(tmp_path / "plain.png")
    assert read_photo_meta(plain.read_bytes(), str(plain)) is None
    assert read_photo_meta(b"not an image at all") is None


# ---- through the pipeline into the store and the CLI --------------------------------


@pytest.fixture(scope="module")
def classifier(weights_files):
    return load_classifier(weights_files.legacy_h5, device="cpu", batch_size=4)


def labels(db_url, *args):
    return runner.invoke(app, ["--db", db_url, *args])


def ok(result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def test_pipeline_stores_metadata_and_imports_keywords(store, db_url, classifier, tmp_path):
    photo = make_photo(tmp_path / "beach.jpg", iptc=("beach", "Summer 2024"))
    plain = make_image(tmp_path / "plain.jpg", seed=3)
    before = sha256_of(photo)
    stats = [(str(p), os.stat(p)) for p in (photo, plain)]
    workqueue.enqueue(store, [records.FileFacts(p, st.st_size, st.st_mtime_ns) for p, st in stats])
    with Pipeline(store, classifier, "test:1") as pipe:
        assert pipe.wait_idle(120)
    assert sha256_of(photo) == before  # the photo itself is never written

    shown = json.loads(ok(labels(db_url, "show", str(photo), "--json")))
    assert shown["status"] == "done"
    assert (shown["taken_at"], shown["camera"]) == ("2024-07-14T15:30:00", "Apple iPhone 13")
    assert shown["gps"] == {"lat": 48.8566667, "lon": 2.3508333}
    assert set(shown["tags"]) == {"beach", "Summer 2024"}
    text = ok(labels(db_url, "show", str(photo)))
    assert "taken:   2024-07-14 15:30:00" in text and "camera:  Apple iPhone 13" in text
    assert "gps:     48.856667, 2.350833" in text
    plain_shown = json.loads(ok(labels(db_url, "show", str(plain), "--json")))
    assert (plain_shown["taken_at"], plain_shown["camera"], plain_shown["gps"]) == (None, None, None)

    found = json.loads(ok(labels(db_url, "search", "beach", "--json")))
    assert [r["path"] for r in found] == [canonical_path(photo)]
    counts = {c["tag"]: c for c in json.loads(ok(labels(db_url, "tags", "--json")))}
    assert counts["beach"]["imported"] == 1
    assert "beach  (imported on 1)" in ok(labels(db_url, "tags"))


# ---- search filters -------------------------------------------------------------------

WHEN_AND_WHERE = {  # name -> (taken_at, camera); every one a tabby
    "june.jpg": ("2024-06-01T00:00:00", "Apple iPhone 13"),
    "august.jpg": ("2024-08-20T10:00:00", "Canon EOS R5"),
    "sept_end.jpg": ("2024-09-30T23:59:59", "Apple iPhone 15 Pro"),
    "october.jpg": ("2024-10-01T00:00:00", "Apple iPhone 13"),
    "may.jpg": ("2024-05-31T23:59:59", "samsung SM-G991B"),
    "undated.jpg": (None, None),
}


@pytest.fixture
def dated_library(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = {name: canonical_path(name) for name in WHEN_AND_WHERE}
    workqueue.enqueue(store, list(paths.values()))
    claims = {c.path: c for c in workqueue.claim(store, "test-node", limit=20)}
    outcomes = [records.Outcome(
        claim=claims[paths[name]], kind="classified", sha256=hashlib.sha256(name.encode()).hexdigest(),
        size=1, mtime_ns=1, width=64, height=48, format="JPEG", model="inception_v3",
        predictions=[records.Prediction(1, "tabby", "n02123045", 281, 0.9)],
        meta=PhotoMeta(taken_at=taken, camera=camera) if taken else None)
        for name, (taken, camera) in WHEN_AND_WHERE.items()]
    contents.record_outcomes(store, "test-node", outcomes)
    return paths


@pytest.mark.parametrize(("options", "expected"), [
    ([], ["august.jpg", "june.jpg", "may.jpg", "october.jpg", "sept_end.jpg", "undated.jpg"]),
    (["--since", "2024-06", "--until", "2024-09"], ["august.jpg", "june.jpg", "sept_end.jpg"]),
    (["--since", "2024-06-02"], ["august.jpg", "october.jpg", "sept_end.jpg"]),
    (["--until", "2024-05-31"], ["may.jpg"]),
    (["--since", "2024"], ["august.jpg", "june.jpg", "may.jpg", "october.jpg", "sept_end.jpg"]),
    (["--until", "2023"], []),
    (["--camera", "iphone"], ["june.jpg", "october.jpg", "sept_end.jpg"]),
    (["--camera", "IPHONE 15"], ["sept_end.jpg"]),
    (["--camera", "%"], []),  # a LIKE wildcard is just a character
    (["--since", "2024-06", "--until", "2024-09", "--camera", "iphone"], ["june.jpg", "sept_end.jpg"]),
])
def test_search_filters_by_date_and_camera(db_url, dated_library, options, expected):
    found = json.loads(ok(labels(db_url, "search", "cat", "--json", *options)))
    assert sorted(os.path.basename(r["path"]) for r in found) == expected


@pytest.mark.parametrize("bad", ["june", "2024-13", "2024/06", "24-06-01"])
def test_a_date_that_is_not_one_is_a_usage_error(db_url, dated_library, bad):
    result = labels(db_url, "search", "cat", "--since", bad)
    assert result.exit_code == 2
    assert "YYYY-MM" in result.output


def test_a_sidecar_counts_even_when_exiv2_cannot_read_the_photo(tmp_path):
    photo = tmp_path / "odd.jpg"
    photo.write_bytes(b"\xff\xd8 not really a JPEG")
    (tmp_path / "odd.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>')
    assert read_photo_meta(photo.read_bytes(), str(photo)) == PhotoMeta(keywords=("holiday",))
