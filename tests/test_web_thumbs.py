"""`/thumb/<sha256>?size=N`: a photo is served by its content hash only, only from
a regular file inside a watched folder that still holds exactly that content,
opened with labelsd's one safe opener; cached on disk, privately and atomically."""

from __future__ import annotations

import os
import stat
from io import BytesIO

import pytest
from PIL import Image

from imagegen import decoded_sizes, make_image, make_phone_jpeg
from labelsd.web import thumbs
from weblib import SPORTS_CAR, LibraryTemplate, predictions, record_in, web_client


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return LibraryTemplate(tmp_path_factory.mktemp("web-thumbs"), cats=2)


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(BytesIO(data)) as img:
        assert img.format == "JPEG"
        return img.size


def test_a_thumbnail_by_hash_fits_its_size_and_is_cached(client, lib, tmp_path):
    sha = lib.sha(lib.car)  # 400x300
    response = client.get(f"/thumb/{sha}?size=128")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert jpeg_size(response.content) == (128, 96)
    assert response.headers["etag"] == f'"{sha}-128-v{thumbs.VERSION}"'
    assert "max-age=31536000" in response.headers["cache-control"]
    assert jpeg_size(client.get(f"/thumb/{sha}").content) == (256, 192)  # the default size
    cached = tmp_path / "thumbs" / sha[:2] / f"{sha}-128-v{thumbs.VERSION}.jpg"
    assert cached.read_bytes() == response.content
    # private to the user: folders 0700, files 0600, nothing half-written left behind
    for folder in (tmp_path / "thumbs", cached.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert sorted(p.name for p in cached.parent.iterdir()) == [
        f"{sha}-128-v{thumbs.VERSION}.jpg", f"{sha}-256-v{thumbs.VERSION}.jpg"]
    # warm: served from the cache even once the photo cannot be read
    lib.car.unlink()
    assert client.get(f"/thumb/{sha}?size=128").content == response.content


def test_the_browsers_copy_is_answered_304(client, lib):
    sha = lib.sha(lib.car)
    tag = client.get(f"/thumb/{sha}").headers["etag"]
    response = client.get(f"/thumb/{sha}", headers={"if-none-match": tag})
    assert response.status_code == 304 and response.content == b""


@pytest.mark.parametrize("size", ["0", "-1", "100", "4096", "abc", "256.0", "1e3", ""])
def test_sizes_outside_the_list_are_400(client, lib, size):
    response = client.get(f"/thumb/{lib.sha(lib.car)}?size={size}")
    assert response.status_code == 400 and "size must be one of" in response.text


@pytest.mark.parametrize("url", [
    "/thumb/" + "0" * 64,  # a hash the library does not hold
    "/thumb/" + "A" * 64,  # not as labelsd writes hashes
    "/thumb/%2e%2e", "/thumb/..%2F..%2Fetc%2Fpasswd", "/thumb/%2Fetc%2Fpasswd",
    "/thumb//etc/passwd", "/thumb/etc/passwd", "/thumb/?path=/etc/passwd",
])
def test_no_path_ever_comes_from_the_url(client, url):
    assert client.get(url).status_code == 404


def test_a_symlink_swapped_in_after_tracking_is_not_followed(client, lib, tmp_path):
    # the link's target holds the very same bytes: only the opener can refuse it
    sha = lib.sha(lib.cats[0])
    target = tmp_path / "outside" / "same.jpg"
    target.parent.mkdir()
    lib.cats[0].rename(target)
    os.symlink(target, lib.cats[0])
    assert client.get(f"/thumb/{sha}").status_code == 404
    # a folder on the way swapped for a link to the same bytes elsewhere: not read either
    dog_sha = lib.sha(lib.dog)
    folder = lib.dog.parent
    elsewhere = tmp_path / "elsewhere"
    folder.rename(elsewhere)
    os.symlink(elsewhere, folder)
    assert client.get(f"/thumb/{dog_sha}").status_code == 404


def test_a_file_changed_since_it_was_read_is_not_that_content(client, lib):
    sha = lib.sha(lib.cats[1])
    make_image(lib.cats[1], size=(320, 240), seed=77, fmt="JPEG")  # other bytes, same name
    assert client.get(f"/thumb/{sha}").status_code == 404


def test_a_copy_elsewhere_serves_when_the_first_path_cannot(client, lib, tmp_path):
    sha = lib.sha(lib.car)
    copy = lib.photos / "zz copy.jpg"
    copy.write_bytes(lib.car.read_bytes())
    record_in(lib, {copy: predictions((SPORTS_CAR, 0.8))})
    lib.car.rename(lib.photos / "moved away.bin")  # the first path is gone (not yet seen)
    assert client.get(f"/thumb/{sha}?size=128").status_code == 200


def test_only_inside_a_watched_folder(lib, tmp_path):
    # a library whose configured and registered folders do not hold its photos
    lib.config.write_text(f'db = "{lib.db}"\nwatch = ["{tmp_path / "elsewhere"}"]\n')
    with web_client(lib, tmp_path / "thumbs") as client:
        assert client.get(f"/thumb/{lib.sha(lib.car)}").status_code == 404
        assert client.get(f"/photo/{lib.sha(lib.car)}").status_code == 200  # the page still shows
    client.site.close()


def test_a_photo_that_cannot_be_shown_is_404_not_an_error(client, lib):
    assert client.get(f"/thumb/{lib.sha(lib.broken)}").status_code == 404


def test_a_cache_folder_others_may_write_is_not_used(lib, tmp_path, caplog):
    shared = tmp_path / "shared-thumbs"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with web_client(lib, shared) as client:
        assert client.get(f"/thumb/{lib.sha(lib.car)}").status_code == 200
    client.site.close()
    assert list(shared.iterdir()) == []
    assert "other users may write in it" in caplog.text


def test_a_phone_photo_is_decoded_in_draft_mode(tmp_path, monkeypatch):
    # 12 MP: JPEG draft mode decodes it at 1/8 scale (500x375) for a 256 thumbnail
    import hashlib

    (tmp_path / "photos").mkdir()
    path = make_phone_jpeg(tmp_path / "photos" / "IMG_0001.jpg")
    records = [{"path": str(path), "status": "done",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]
    decoded = decoded_sizes(monkeypatch)
    made = thumbs.make_thumbnail(records, [str(tmp_path / "photos")], 256)
    assert decoded == [(500, 375)] and jpeg_size(made) == (256, 192)


def test_a_full_disk_still_serves_the_thumbnail(client, lib, monkeypatch):
    import errno
    import tempfile

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    response = client.get(f"/thumb/{lib.sha(lib.car)}?size=128")
    assert response.status_code == 200 and jpeg_size(response.content) == (128, 96)


def test_the_cache_never_takes_the_last_of_its_disk(client, lib, tmp_path, monkeypatch, caplog):
    """The cache grows with what is browsed: on a disk with under KEEP_FREE left (the
    library's and the photos' disk, maybe) nothing more is cached, the thumbnail is still
    served, and one warning says so; with room again, caching goes on."""
    import logging

    real = os.statvfs
    room = {"free": 10 << 20}

    class Stat:
        def __init__(self, st):
            self.f_frsize, self.f_blocks = 4096, (100 << 30) // 4096
            self.f_bavail = room["free"] // 4096

    monkeypatch.setattr(thumbs.os, "statvfs", lambda path: Stat(real(path)))
    folder = tmp_path / "thumbs"
    with caplog.at_level(logging.WARNING, logger="labelsd.web.thumbs"):
        for size in (128, 512):
            response = client.get(f"/thumb/{lib.sha(lib.car)}?size={size}")
            assert response.status_code == 200 and max(jpeg_size(response.content)) == min(size, 400)
    assert not list(folder.rglob("*.jpg"))
    assert caplog.text.count("not caching more thumbnails") == 1 and "1024 MiB" in caplog.text
    room["free"] = 2 << 30
    client.get(f"/thumb/{lib.sha(lib.car)}?size=128")
    assert [p.name for p in folder.rglob("*.jpg")] == [f"{lib.sha(lib.car)}-128-v{thumbs.VERSION}.jpg"]
