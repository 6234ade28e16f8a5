"""XMP sidecars (labelsd.xmp): NAME.EXT.xmp beside a labelled photo, read back with
exiv2; other programs' fields kept exactly; a keyword a person removed elsewhere not
forced back; atomic writes; `labels xmp write`; `labels tag` rewriting it; a
read-only folder one warning; and the real service writing them as photos land."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import exiv2
import pytest

from clikit import labels, ok
from imagegen import make_image
from labelsd.errors import SidecarError
from labelsd.events import Events
from labelsd.records import Claim, Outcome, OutcomeKind
from labelsd.xmp.sidecar import write_sidecar
from labelsd.xmp.writer import SidecarWriter
from servicekit import Service, service_env, sha256_of, wait_for
from test_metadata import make_photo
from test_search import add_images

OURS = ("Xmp.dc.subject", "Xmp.lr.hierarchicalSubject", "Xmp.digiKam.TagsList",
        "Xmp.labelsd.keywords", "Xmp.labelsd.suppressed")

# What digiKam and darktable leave in a sidecar: a rating, a colour label, an edit
# history (an array of structs), a keyword hierarchy of their own, a namespace exiv2
# does not know.
FOREIGN_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:acme="http://example.com/acme/1.0/"
   xmp:Rating="4"
   digiKam:ColorLabel="3"
   darktable:xmp_version="5"
   darktable:history_end="2"
   acme:whatever="kept as it was">
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1"
      darktable:params="0000000000000000cdcc4c3e0000803f"/>
     <rdf:li darktable:num="1" darktable:operation="colorin" darktable:enabled="1"
      darktable:params="gz48eJzjZBgFo2AU0AsAAAwAAQ=="/>
    </rdf:Seq>
   </darktable:history>
   <dc:subject><rdf:Bag><rdf:li>family</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>People|family</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <digiKam:TagsList><rdf:Seq><rdf:li>People/family</rdf:li></rdf:Seq></digiKam:TagsList>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def read_xmp(path) -> dict[str, list[bytes]]:
    """Every XMP property exiv2 reads from a file, key -> its values as bytes."""
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    found: dict[str, list[bytes]] = {}
    for datum in image.xmpData():
        n = datum.count()
        values = [datum.toString(i) for i in range(n)] if datum.typeName() in ("XmpBag", "XmpSeq") \
            else [datum.toString()]
        found[datum.key()] = [v.encode() for v in values]
    return found


def words(xmp: dict, key: str) -> list[str]:
    return [v.decode() for v in xmp.get(key, [])]


def edit_elsewhere(sidecar, key: str, items: list[str]) -> None:
    """What another program does: rewrite one array of the sidecar."""
    image = exiv2.ImageFactory.open(str(sidecar))
    image.readMetadata()
    xmp = image.xmpData()
    found = xmp.findKey(exiv2.XmpKey(key))
    while found != xmp.end():
        xmp.erase(found)
        found = xmp.findKey(exiv2.XmpKey(key))
    if items:
        value = exiv2.XmpArrayValue(exiv2.TypeId.xmpBag)
        for item in items:
            value.read(item)
        xmp.add(exiv2.XmpKey(key), value)
    image.setXmpData(xmp)
    image.writeMetadata()


# ---- the sidecar itself ------------------------------------------------------------


def test_new_sidecar_holds_labels_tags_and_the_hierarchy(tmp_path):
    photo = make_image(tmp_path / "cat.jpg")
    before = sha256_of(photo)
    assert write_sidecar(str(photo), ["tabby", "tiger cat"], ["vacation", "Grandma's 90th"])
    xmp = read_xmp(str(photo) + ".xmp")
    assert words(xmp, "Xmp.dc.subject") == ["tabby", "tiger cat", "vacation", "Grandma's 90th"]
    assert words(xmp, "Xmp.lr.hierarchicalSubject") == ["labelsd|tabby", "labelsd|tiger cat"]
    assert words(xmp, "Xmp.digiKam.TagsList") == ["labelsd/tabby", "labelsd/tiger cat"]
    assert sha256_of(photo) == before
    assert sorted(os.listdir(tmp_path)) == ["cat.jpg", "cat.jpg.xmp"]  # no temporary file left


def test_foreign_fields_are_kept_byte_for_byte(tmp_path):
    photo = make_image(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    sidecar.write_text(FOREIGN_SIDECAR)
    before = read_xmp(sidecar)
    assert write_sidecar(str(photo), ["tabby"], ["vacation"])
    after = read_xmp(sidecar)
    foreign = {k: v for k, v in before.items() if k not in OURS}
    assert len(foreign) > 10 and "Xmp.darktable.history[2]/darktable:params" in foreign
    assert {k: v for k, v in after.items() if k not in OURS} == foreign
    # the other programs' keywords stay, labelsd's join them
    assert words(after, "Xmp.dc.subject") == ["family", "tabby", "vacation"]
    assert words(after, "Xmp.lr.hierarchicalSubject") == ["People|family", "labelsd|tabby"]
    assert words(after, "Xmp.digiKam.TagsList") == ["People/family", "labelsd/tabby"]
    # labelsd rewriting its keywords again changes nothing else either
    assert write_sidecar(str(photo), ["Persian cat"], [])
    again = read_xmp(sidecar)
    assert {k: v for k, v in again.items() if k not in OURS} == foreign
    assert words(again, "Xmp.dc.subject") == ["family", "Persian cat"]
    assert words(again, "Xmp.lr.hierarchicalSubject") == ["People|family", "labelsd|Persian cat"]


def test_a_keyword_removed_elsewhere_is_not_forced_back(tmp_path):
    photo = make_image(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    write_sidecar(str(photo), ["tabby"], ["vacation", "indoor"])
    # The person removes "tabby" and "indoor" in digiKam, and adds a keyword of their own.
    edit_elsewhere(sidecar, "Xmp.dc.subject", ["vacation", "birthday"])
    edit_elsewhere(sidecar, "Xmp.lr.hierarchicalSubject", [])
    write_sidecar(str(photo), ["tabby"], ["vacation", "indoor"])
    xmp = read_xmp(sidecar)
    assert sorted(words(xmp, "Xmp.dc.subject")) == ["birthday", "vacation"]  # a bag: order is free
    assert "Xmp.lr.hierarchicalSubject" not in xmp
    assert words(xmp, "Xmp.labelsd.suppressed") == ["indoor", "tabby"]
    # ... until the person tags the photo with it again in labelsd
    write_sidecar(str(photo), ["tabby"], ["vacation", "indoor"], lift=["indoor"])
    assert sorted(words(read_xmp(sidecar), "Xmp.dc.subject")) == ["birthday", "indoor", "vacation"]


def test_an_untagged_tag_leaves_the_sidecar_and_unchanged_is_not_rewritten(tmp_path):
    photo = make_image(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    write_sidecar(str(photo), ["tabby"], ["vacation", "indoor"])
    assert write_sidecar(str(photo), ["tabby"], ["vacation"])
    assert words(read_xmp(sidecar), "Xmp.dc.subject") == ["tabby", "vacation"]
    stamp = sidecar.stat().st_mtime_ns
    assert not write_sidecar(str(photo), ["tabby"], ["vacation"])
    assert sidecar.stat().st_mtime_ns == stamp


def test_a_sidecar_exiv2_cannot_read_is_left_alone(tmp_path):
    photo = make_image(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    sidecar.write_bytes(b"this is no XMP")
    with pytest.raises(SidecarError, match="left as it is"):
        write_sidecar(str(photo), ["tabby"], [])
    assert sidecar.read_bytes() == b"this is no XMP"


# ---- the CLI ------------------------------------------------------------------------


@pytest.fixture
def photos(store, tmp_path, monkeypatch):
    return make_photos(store, tmp_path, monkeypatch)


def make_photos(store, tmp_path, monkeypatch):
    """Three classified photos that exist on disk (also test_judged_xmp.py's)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for i, name in enumerate(("tabby.jpg", "unsure.jpg", "dog.jpg")):
        make_image(folder / name, seed=i)
    paths = add_images(store, {
        "tabby.jpg": [(281, 0.90), (282, 0.25), (285, 0.02)],   # tabby, tiger cat, Egyptian cat
        "unsure.jpg": [(281, 0.15), (282, 0.10), (285, 0.05)],  # nothing reaches 0.2
        "dog.jpg": [(207, 0.85), (208, 0.10), (222, 0.02)],     # golden retriever
    })
    return folder, paths


def test_labels_xmp_write_all_or_what_a_query_finds(db_url, photos):
    folder, paths = photos
    out = ok(labels(db_url, "xmp", "write", "cat"))
    assert out.startswith("1 sidecar(s) written, 0 already up to date, 1 photo(s) skipped")
    # no label above 0.2 and no tag: no sidecar at all (issue 31), not an empty one
    assert sorted(p.name for p in folder.glob("*.xmp")) == ["tabby.jpg.xmp"]
    assert words(read_xmp(folder / "tabby.jpg.xmp"), "Xmp.dc.subject") == ["tabby", "tiger cat"]
    out = ok(labels(db_url, "xmp", "write", "--min-score", "0.5"))
    assert out.startswith("2 sidecar(s) written, 0 already up to date")  # the dog's is new
    assert words(read_xmp(folder / "tabby.jpg.xmp"), "Xmp.dc.subject") == ["tabby"]  # tiger cat < 0.5
    assert words(read_xmp(folder / "dog.jpg.xmp"), "Xmp.dc.subject") == ["golden retriever"]


def test_xmp_write_query_finds_what_labels_search_finds(db_url, store, photos):
    folder, _ = photos
    make_image(folder / "faint.jpg", seed=5)
    add_images(store, {"faint.jpg": [(207, 0.80), (281, 0.03)]})  # a tabby at 3%: below the floor
    result = labels(db_url, "xmp", "write", "cat")
    # tabby.jpg's is written; unsure.jpg (found, but no label reaches xmp_min_score, no tag)
    # gets none (issue 31)
    assert ok(result).startswith("1 sidecar(s) written, 0 already up to date, 1 photo(s) skipped")
    assert "1 more image(s) match with a score below 10%" in result.stderr
    # the way to see them is search's: xmp write's own --min-score picks the sidecars' labels
    assert "left out; `labels search cat --min-score 0` lists them" in result.stderr
    assert not (folder / "faint.jpg.xmp").exists()


def test_tag_rewrites_the_sidecar_when_the_config_says_so(db_url, photos, tmp_path):
    folder, paths = photos
    tabby = paths["tabby.jpg"]
    ok(labels(db_url, "tag", tabby, "vacation"))
    assert not (folder / "tabby.jpg.xmp").exists()  # sidecars are off by default
    config = tmp_path / "config.toml"
    config.write_text('xmp = "sidecar"\nxmp_min_score = 0.5\n')
    ok(labels(db_url, "tag", tabby, "indoor", config=config))
    assert words(read_xmp(folder / "tabby.jpg.xmp"), "Xmp.dc.subject") == ["tabby", "indoor", "vacation"]
    ok(labels(db_url, "untag", tabby, "vacation", config=config))
    assert words(read_xmp(folder / "tabby.jpg.xmp"), "Xmp.dc.subject") == ["tabby", "indoor"]


@pytest.mark.userns
def test_a_read_only_folder_is_one_warning(db_url, photos, tmp_path):
    """A real read-only bind mount, in a mount namespace of its own (`unshare -Urm`)."""
    folder, paths = photos
    if subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged user namespaces (unshare -Urm) are off on this machine")
    if "://" in db_url:
        pytest.skip("the namespace's fake root may not reach the PostgreSQL server's socket")
    script = (f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && '
              f'exec "{sys.executable}" -c "from labels_cli.app import main; main()" '
              f'--db "{db_url}" xmp write')
    run = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True,
                         env=service_env(tmp_path), timeout=120)
    warnings = [line for line in run.stderr.splitlines() if line.startswith("labels: warning:")]
    assert len(warnings) == 1, run.stderr
    assert "Read-only file system" in warnings[0] and "ReadWritePaths=" in warnings[0]
    assert run.returncode == 1 and "no sidecar could be written" in run.stderr
    assert not list(folder.glob("*.xmp")) and not list(folder.glob(".*"))
    shown = json.loads(ok(labels(db_url, "show", paths["tabby.jpg"], "--json")))
    assert shown["status"] == "done"  # the photo is fine


def test_the_sidecar_thread_writes_what_batches_report_and_stops_cleanly(store, photos):
    folder, paths = photos
    writer = SidecarWriter(store, min_score=0.2).start()
    claims = {c.path: c for c in (Claim(i, p, datetime.now(timezone.utc), 0)
                                  for i, p in enumerate(paths.values()))}
    events = Events()
    events.listen("batch_written", writer.on_batch)
    events.emit("batch_written", [Outcome(claims[paths["tabby.jpg"]], OutcomeKind.CLASSIFIED),
                                  Outcome(claims[paths["dog.jpg"]], OutcomeKind.BAD_IMAGE),
                                  Outcome(claims[paths["unsure.jpg"]], OutcomeKind.CLASSIFIED)])
    wait_for((folder / "tabby.jpg.xmp").exists, 30, "the sidecar of tabby.jpg")
    events.emit("batch_written", [Outcome(claims[paths["dog.jpg"]], OutcomeKind.LINKED)])
    writer.stop()
    writer.stop()  # idempotent
    # unsure.jpg has no label above the floor and no tag: no sidecar
    assert sorted(p.name for p in folder.glob("*.xmp")) == ["dog.jpg.xmp", "tabby.jpg.xmp"]
    assert writer.written == 2  # queued before stop(): written, not dropped


# ---- the service -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_leaked_sidecar_threads():
    yield
    leaked = [t.name for t in threading.enumerate() if t.name == "labelsd-sidecars"]
    assert not leaked, f"threads left running: {leaked}"


def test_service_writes_sidecars_as_photos_land(tmp_path, biased_weights_file):
    home = Path(os.path.realpath(tmp_path))
    inbox = home / "inbox"
    inbox.mkdir()
    staging = home / "staging"
    staging.mkdir()
    svc = Service(home, db=home / "labels.db", weights=biased_weights_file, watch=[inbox],
                  args=["--xmp", "sidecar"])
    svc.start().wait_ready()
    try:
        photo = make_photo(staging / "cat.jpg", iptc=("beach",), size=(320, 240))
        before = sha256_of(photo)
        os.rename(photo, inbox / "cat.jpg")
        sidecar = inbox / "cat.jpg.xmp"
        wait_for(sidecar.exists, 120, "the sidecar of cat.jpg", on_timeout=svc.tail)
        xmp = read_xmp(sidecar)
        assert words(xmp, "Xmp.dc.subject") == ["tabby", "beach"]  # top label; imported keyword
        assert words(xmp, "Xmp.lr.hierarchicalSubject") == ["labelsd|tabby"]
        assert sha256_of(inbox / "cat.jpg") == before
        assert sorted(os.listdir(inbox)) == ["cat.jpg", "cat.jpg.xmp"]
        assert svc.statuses() == {str(inbox / "cat.jpg"): "done"}  # the sidecar is no photo
    finally:
        assert svc.stop() == 0, svc.tail()
