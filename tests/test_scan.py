"""`labels scan DIR` through the real CLI, store and (random-weights) InceptionV3."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from typer.testing import CliRunner

from imagegen import make_image, make_truncated_jpeg
from labels_cli.app import app
from labelsd.pipeline.scan import walk_images


@pytest.fixture
def scan(db_url, weights_file):
    runner = CliRunner()

    def run(folder, *extra):
        # fp32, not auto: auto converts and measures every precision once per weights file
        # (tests/test_precision.py and test_litert.py test it); fp32 shares the other tests' conversion
        result = runner.invoke(app, ["--db", db_url, "scan", str(folder),
                                     "--weights", str(weights_file), "--batch-size", "4",
                                     "--device", "cpu", "--precision", "fp32", *extra])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout.strip().splitlines()[-1]

    return run


def test_scan_labels_a_folder_then_skips_it_then_links_a_copy(scan, store, tmp_path):
    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    (photos / ".thumbnails").mkdir()
    files = [make_image(photos / f"{i}.jpg", seed=i) for i in range(3)]
    files.append(make_image(photos / "2024" / "deep.png", seed=10))
    make_image(photos / ".thumbnails" / "hidden.jpg", seed=11)
    (photos / "notes.txt").write_text("not an image")
    broken = make_truncated_jpeg(photos / "broken.jpg")
    a_minute_ago = time.time() - 60  # a truncated file written just now is retried, not failed
    os.utime(broken, (a_minute_ago, a_minute_ago))

    assert scan(photos) == "4 labeled, 0 linked, 1 failed, 0 unchanged"
    for f in files:
        rec = store.record(str(f))
        assert rec.status == "done" and len(rec.labels) == 3
    assert store.record(str(broken)).error == "truncated JPEG"
    assert store.record(str(photos / ".thumbnails" / "hidden.jpg")) is None

    assert scan(photos) == "0 labeled, 0 linked, 0 failed, 5 unchanged"

    shutil.copyfile(files[0], photos / "copy.jpg")
    files[1].unlink()
    assert scan(photos) == "0 labeled, 1 linked, 0 failed, 4 unchanged, 1 missing"
    assert store.record(str(photos / "copy.jpg")).sha256 == store.record(str(files[0])).sha256
    assert store.record(str(files[1])).status == "missing"


def test_scan_rejects_a_missing_folder(db_url, tmp_path):
    result = CliRunner().invoke(app, ["--db", db_url, "scan", str(tmp_path / "nope")])
    assert result.exit_code == 2


def test_walk_does_not_follow_symlinks_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    inside = make_image(root / "a.jpg")
    make_image(outside / "b.jpg", seed=1)
    (root / "link-out.jpg").symlink_to(outside / "b.jpg")
    (root / "dir-out").symlink_to(outside, target_is_directory=True)
    (root / "link-in.jpg").symlink_to(inside)
    found = sorted(f.path for f in walk_images(str(root)))
    assert found == [str(root / "a.jpg"), str(root / "link-in.jpg")]


def test_a_photo_changed_in_place_keeps_its_tags_a_new_one_under_an_old_name_does_not(
        scan, store, tmp_path):
    """Rotating a photo, or an app writing keywords into it, changes its bytes: the new
    version is classified anew and keeps the tags. A different photo saved under the
    name of one deleted meanwhile (`missing` in between) starts without them."""
    from PIL import Image

    from labelsd.store.tags import add_tags

    photos = tmp_path / "photos"
    photos.mkdir()
    edited, reused, copy = (make_image(photos / f"{n}.jpg", size=(96, 64), seed=s)
                            for n, s in (("edited", 1), ("reused", 2), ("copy-of-edited", 1)))
    assert scan(photos).endswith("0 failed, 0 unchanged")  # the copy rode along with its twin
    assert store.record(str(copy)).sha256 == store.record(str(edited)).sha256
    add_tags(store, str(edited), ["Vacation", "grandma"])
    add_tags(store, str(reused), ["kitchen"])
    old_sha = store.record(str(edited)).sha256

    with Image.open(edited) as img:  # rotated in place, as an editor saves it
        img.transpose(Image.Transpose.ROTATE_90).save(edited, "JPEG", quality=90)
    reused.unlink()
    assert scan(photos) == "1 labeled, 0 linked, 0 failed, 1 unchanged, 1 missing"
    make_image(reused, size=(96, 64), seed=99)  # another picture, the same name
    assert scan(photos) == "1 labeled, 0 linked, 0 failed, 2 unchanged"

    rec = store.record(str(edited))
    assert rec.sha256 != old_sha and (rec.width, rec.height) == (64, 96)
    assert sorted(rec.tags) == ["Vacation", "grandma"]
    assert sorted(store.record(str(copy)).tags) == ["Vacation", "grandma"]  # the old bytes
    assert store.record(str(reused)).tags == []
