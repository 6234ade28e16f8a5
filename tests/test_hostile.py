"""Hostile folder contents against the pipeline's reader and the gallery (issue 14):
a path that changes kind after it was queued (FIFO, device node, symlink, a
symlinked folder), a file over the size cap, a photo renamed or deleted while
it is in the model. Real SQLite store, real InceptionV3 with random weights."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import update

from imagegen import make_image
from labelsd import records
from labelsd.model import decode
from labelsd.model.classifier import load_classifier
from labelsd.pipeline.runner import Pipeline
from labelsd.serve import thumbnails
from labelsd.store import contents, workqueue
from labelsd.store.schema import QueueItem
from servicekit import sha256_of

IDLE_S = 60  # a hang shows as a timeout, never as a test that never ends


@pytest.fixture(scope="module")
def classifier(weights_files):
    return load_classifier(weights_files.legacy_h5, device="cpu", batch_size=4)


def enqueue(store, paths):
    facts = [records.FileFacts(str(p), os.lstat(p).st_size, os.lstat(p).st_mtime_ns)
             for p in paths]
    return workqueue.enqueue(store, facts)


def unblock_fifo(path: Path, stop: threading.Event) -> None:
    """On the code before the fix the reader blocks in open() on the FIFO: once
    the test gave up waiting, open its other end so the pipeline can stop."""
    while not stop.wait(0.2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue  # no reader blocked on it (the fixed code never opens it)
        os.close(fd)


def run_until_idle(store, classifier, unblock: Path | None = None) -> tuple[bool, Pipeline]:
    release = threading.Event()
    helper = None
    with Pipeline(store, classifier, "test:1") as pipe:
        idle = pipe.wait_idle(IDLE_S)
        if unblock is not None and not idle:
            helper = threading.Thread(target=unblock_fifo, args=(unblock, release), daemon=True)
            helper.start()
    release.set()
    if helper is not None:
        helper.join(5)
    return idle, pipe


def swap_in(kind_maker, target: Path) -> None:
    """Make a thing beside `target` and rename it over `target` (`mv -T`)."""
    tmp = target.with_name("." + target.name + ".swap")
    kind_maker(tmp)
    os.rename(tmp, target)


def test_fifo_swapped_over_a_queued_photo_fails_and_the_queue_goes_on(store, classifier, tmp_path):
    photos = [make_image(tmp_path / f"{name}.jpg", seed=i) for i, name in enumerate("abc")]
    victim = make_image(tmp_path / "zz.jpg", seed=9)
    enqueue(store, [*photos, victim])
    swap_in(os.mkfifo, victim)

    idle, _ = run_until_idle(store, classifier, unblock=victim)

    assert idle, "the reader blocked on the FIFO"
    assert [store.record(str(p)).status for p in photos] == ["done"] * 3
    rec = store.record(str(victim))
    assert rec.status == "failed" and "FIFO" in rec.error


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device node needs root")
def test_device_node_swapped_over_a_queued_photo_fails(store, classifier, tmp_path):
    photo = make_image(tmp_path / "a.jpg", seed=1)
    victim = make_image(tmp_path / "zz.jpg", seed=2)
    enqueue(store, [photo, victim])
    swap_in(lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)), victim)  # /dev/null

    idle, _ = run_until_idle(store, classifier)

    assert idle
    assert store.record(str(photo)).status == "done"
    rec = store.record(str(victim))
    assert rec.status == "failed" and "character device" in rec.error


def test_symlink_swapped_over_a_queued_photo_is_never_read(store, classifier, tmp_path):
    inside, outside = tmp_path / "watched", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    secret = make_image(outside / "secret.png", seed=5)
    photo = make_image(inside / "a.png", seed=1)
    victim = make_image(inside / "zz.png", seed=2)
    enqueue(store, [photo, victim])
    swap_in(lambda p: os.symlink(secret, p), victim)

    idle, _ = run_until_idle(store, classifier)

    assert idle
    assert store.record(str(photo)).status == "done"
    rec = store.record(str(victim))
    assert rec.status == "failed" and "symbolic link" in rec.error
    assert rec.sha256 is None and contents.content_status(store, [sha256_of(secret)]) == {}


def test_folder_swapped_for_a_symlink_is_never_read_through(store, classifier, tmp_path):
    inside, outside = tmp_path / "watched", tmp_path / "private"
    (inside / "album").mkdir(parents=True)
    outside.mkdir()
    secret = make_image(outside / "zz.png", seed=5)  # the same name as the queued photo
    victim = make_image(inside / "album" / "zz.png", seed=2)
    enqueue(store, [victim])
    os.rename(inside / "album", inside / ".album-away")
    os.symlink(outside, inside / "album")

    idle, _ = run_until_idle(store, classifier)

    assert idle
    # (store.record would resolve the folder's link: look the stored path up as it is)
    [rec] = [r for r in store.records(status="failed") if r.path == str(victim)]
    assert "symbolically linked folder" in rec.error
    assert contents.content_status(store, [sha256_of(secret)]) == {}


def test_file_over_the_size_cap_fails_without_being_read(store, classifier, tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "_max_file_bytes", 1 << 20)  # 1 MiB, as max_file_mb = 1
    photo = make_image(tmp_path / "a.jpg", seed=1)
    sparse = tmp_path / "huge.jpg"
    with open(sparse, "wb") as fh:
        fh.truncate(3 << 30)  # 3 GiB, no blocks on disk
    enqueue(store, [photo, sparse])

    idle, _ = run_until_idle(store, classifier)

    assert idle
    assert store.record(str(photo)).status == "done"
    rec = store.record(str(sparse))
    assert rec.status == "failed" and "larger than the 1 MiB limit" in rec.error


def test_gallery_does_not_open_a_symlinked_photo(tmp_path):
    secret = make_image(tmp_path / "secret.png", seed=5, size=(40, 30))
    link = tmp_path / "zz.png"
    os.symlink(secret, link)
    thumb = thumbnails.thumbnail(str(link), 64)
    assert thumb.image is None and "symbolic link" in thumb.reason


def test_gallery_does_not_block_on_a_fifo(tmp_path):
    fifo = tmp_path / "zz.jpg"
    os.mkfifo(fifo)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(thumbnails.thumbnail(str(fifo), 64)),
                              daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the code before the fix, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
    assert result, "thumbnail() blocked on a FIFO"
    assert result[0].image is None and "FIFO" in result[0].reason



def test_photo_still_being_written_is_not_failed(store, classifier, tmp_path):
    """A slow copy: the first half of a JPEG is there (just written) when its row
    is claimed. It waits to be read again; it is never `failed` meanwhile."""
    whole = make_image(tmp_path / "src.jpg", seed=3, size=(320, 240)).read_bytes()
    (tmp_path / "src.jpg").unlink()
    photo = tmp_path / "slow.jpg"
    photo.write_bytes(whole[: len(whole) // 2])
    enqueue(store, [photo])

    idle, pipe = run_until_idle(store, classifier)

    assert idle
    rec = store.record(str(photo))
    assert rec.status == "pending" and pipe.failed == 0, (rec.status, rec.error)
    photo.write_bytes(whole)  # the copy ends; its close event queues it again
    enqueue(store, [photo])
    with store.write() as session:  # no back-off wait in a test: due now
        session.execute(update(QueueItem).values(not_before=None))
    idle, _ = run_until_idle(store, classifier)
    assert idle and store.record(str(photo)).status == "done"


def test_size_cap_is_a_setting_with_a_sane_default(tmp_path):
    from labelsd.config import load_settings
    from labelsd.errors import ConfigError

    config = tmp_path / "config.toml"
    config.write_text("max_file_mb = 64\n")
    assert load_settings(str(config), env={}).max_file_mb == 64
    assert load_settings(None, env={}).max_file_mb == decode.MAX_FILE_MB == 256
    config.write_text("max_file_mb = 0\n")
    with pytest.raises(ConfigError, match="max_file_mb"):
        load_settings(str(config), env={})


def test_scan_still_labels_a_link_inside_its_folder_but_not_one_out(store, classifier, tmp_path):
    """`labels scan` takes a symlinked file whose target is inside the scanned
    folder (scan.walk_images); the safe open follows that one link, no other."""
    from labelsd.pipeline.scan import scan_folder

    root, outside = tmp_path / "photos", tmp_path / "private"
    root.mkdir()
    outside.mkdir()
    target = make_image(root / "a.jpg", seed=1)
    (root / "link-in.jpg").symlink_to(target)
    scan_folder(store, classifier, root, timeout=IDLE_S)
    assert store.record(str(root / "link-in.jpg")).status == "done"
    (root / "link-in.jpg").unlink()
    os.symlink(make_image(outside / "secret.jpg", seed=2), root / "link-in.jpg")
    assert open_regular_refuses(str(root / "link-in.jpg"), [str(root)])


def open_regular_refuses(path: str, within: list[str]) -> bool:
    from labelsd.fileio import NotARegularFile, open_regular

    try:
        open_regular(path, links_within=within)
    except NotARegularFile:
        return True
    return False
