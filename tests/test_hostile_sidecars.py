"""What a folder can put where a photo's sidecar goes (issue 31): a FIFO, a
folder, a device, a symlink (to /dev/zero, to another photo's sidecar), a 2 GB
sparse file, a sidecar that changes while it is read. Reading the photo's
metadata and writing its sidecar open it through the one safe opener
(fileio.open_regular): never blocking, a regular file or nothing, no link
followed, at most MAX_XMP_BYTES read. The photo is labelled all the same."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import metagen
from imagegen import make_image
from labelsd.errors import SidecarError
from labelsd.xmp.metadata import read_photo_meta
from labelsd.xmp.sidecar import write_sidecar
from test_metadata import make_photo


def in_thread(fn, *args, fifo: Path | None = None, timeout: float = 10):
    """fn(*args) on a thread; a call still blocked after `timeout` (the code before
    the fix, in open() of a FIFO) is unblocked by opening the FIFO's other end, and
    reported as blocked."""
    result: dict = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    blocked = worker.is_alive()
    if blocked and fifo is not None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
    assert not blocked, f"{fn.__name__} blocked on the sidecar"
    return result


# ---- reading the metadata of a photo ------------------------------------------------------


def test_a_fifo_sidecar_never_blocks_reading_the_photo(tmp_path):
    photo = make_photo(tmp_path / "trap.jpg", iptc=("beach",))
    fifo = tmp_path / "trap.jpg.xmp"
    os.mkfifo(fifo)
    got = in_thread(read_photo_meta, photo.read_bytes(), str(photo), fifo=fifo)
    assert got["value"].keywords == ("beach",)  # the photo's own metadata is still read
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("kind", ["folder", "symlink to a sidecar"])
def test_a_sidecar_that_is_no_regular_file_is_not_read(tmp_path, kind):
    photo = make_photo(tmp_path / "a.jpg", iptc=("beach",))
    sidecar = tmp_path / "a.jpg.xmp"
    elsewhere = tmp_path / "private" / "secret.jpg.xmp"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(metagen.xmp_packet(["secret keyword"]))
    if kind == "folder":
        sidecar.mkdir()
    else:
        sidecar.symlink_to(elsewhere)
    got = in_thread(read_photo_meta, photo.read_bytes(), str(photo))
    assert got["value"].keywords == ("beach",)


def test_a_huge_sparse_sidecar_is_not_read(tmp_path):
    photo = make_photo(tmp_path / "a.jpg", iptc=("beach",))
    with open(tmp_path / "a.jpg.xmp", "wb") as fh:
        fh.write(metagen.xmp_packet(["holiday"]))
        fh.truncate(2 << 30)  # 2 GiB, no blocks on disk
    got = in_thread(read_photo_meta, photo.read_bytes(), str(photo))
    assert got["value"].keywords == ("beach",)


# ---- writing the sidecar ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink out"])
def test_the_writer_leaves_a_sidecar_that_is_no_regular_file_alone(tmp_path, kind):
    photo = make_image(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    outside = tmp_path / "private.xmp"
    outside.write_bytes(metagen.xmp_packet(["mine"]))
    before = outside.read_bytes()
    makers = {"fifo": os.mkfifo, "folder": os.mkdir, "symlink out": lambda p: os.symlink(outside, p)}
    makers[kind](sidecar)
    kind_before = os.lstat(sidecar).st_mode
    got = in_thread(write_sidecar, str(photo), ["tabby"], [], fifo=sidecar if kind == "fifo" else None)
    err = got.get("error")
    assert isinstance(err, SidecarError), got
    assert "cat.jpg" in str(err) and "left as it is" in str(err)
    assert os.lstat(sidecar).st_mode == kind_before  # not replaced, not followed
    assert outside.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "device node /dev/zero"])
def test_a_sidecar_that_is_dev_zero_is_neither_read_nor_written(tmp_path, kind):
    """In a child with 1 GiB of address space and a deadline: the code before the
    fix read /dev/zero until memory ran out."""
    photo = make_photo(tmp_path / "a.jpg", iptc=("beach",))
    sidecar = tmp_path / "a.jpg.xmp"
    if kind.startswith("symlink"):
        sidecar.symlink_to("/dev/zero")
    elif os.geteuid() == 0:
        os.mknod(sidecar, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    else:
        pytest.skip("mknod of a device node needs root")
    before = os.lstat(sidecar)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from labelsd.errors import SidecarError\n"
        "from labelsd.xmp.metadata import read_photo_meta\n"
        "from labelsd.xmp.sidecar import write_sidecar\n"
        "photo = sys.argv[1]\n"
        "print(read_photo_meta(open(photo, 'rb').read(), photo).keywords)\n"
        "try:\n"
        "    write_sidecar(photo, ['tabby'], [])\n"
        "except SidecarError as err:\n"
        "    print('refused:', err)\n")
    run = subprocess.run([sys.executable, "-c", code, str(photo)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0] == "('beach',)"
    assert lines[1].startswith("refused:") and "a.jpg" in lines[1] and "left as it is" in lines[1]
    assert (os.lstat(sidecar).st_mode, os.lstat(sidecar).st_ino) == (before.st_mode, before.st_ino)


# ---- through the pipeline (the reproduction) ---------------------------------------


def test_fifo_sidecars_beside_as_many_photos_as_decode_workers_stop_nothing(weights_files, tmp_path):
    """One FIFO sidecar per decode worker, then an innocent photo: before the fix
    every decode thread blocked in open() and the innocent photo waited forever."""
    from labelsd import records
    from labelsd.model.classifier import load_classifier
    from labelsd.pipeline.runner import Pipeline
    from labelsd.store import workqueue
    from labelsd.store.engine import open_store

    store = open_store(str(tmp_path / "labels.db"))
    classifier = load_classifier(weights_files.legacy_h5, device="cpu", batch_size=4)
    workers = 2
    traps = [make_image(tmp_path / f"trap{n}.jpg", seed=n) for n in range(workers)]
    fifos = [Path(str(p) + ".xmp") for p in traps]
    for fifo in fifos:
        os.mkfifo(fifo)
    innocent = make_image(tmp_path / "innocent.jpg", seed=99)
    workqueue.enqueue(store, [records.FileFacts(str(p)) for p in [*traps, innocent]])
    with Pipeline(store, classifier, "test:1", decode_workers=workers) as pipe:
        idle = pipe.wait_idle(60)
        if not idle:  # unblock the code before the fix, so that the pipeline can stop
            for fifo in fifos:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert idle, "the decode threads blocked on the FIFO sidecars"
    assert [store.record(str(p)).status for p in [*traps, innocent]] == ["done"] * (workers + 1)
    store.close()


# ---- sidecars are always well-formed --------------------------------------------------------


def test_no_sidecar_for_a_photo_with_nothing_to_say(tmp_path):
    """No label above the floor and no tag: no sidecar (it used to be a 54-byte
    `<?xpacket begin=...?>` with no x:xmpmeta and no end marker)."""
    photo = make_image(tmp_path / "unsure.jpg")
    assert not write_sidecar(str(photo), [], [])  # SidecarWrite(False): nothing written
    assert sorted(os.listdir(tmp_path)) == ["unsure.jpg"]


def test_a_sidecar_left_with_nothing_of_labelsd_is_still_whole(tmp_path):
    photo = make_image(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    assert write_sidecar(str(photo), ["tabby"], ["vacation"])
    assert write_sidecar(str(photo), [], [])  # every keyword of labelsd's goes
    data = sidecar.read_bytes()
    assert metagen.whole_packet(data), data
    assert read_photo_meta(photo.read_bytes(), str(photo)) is None  # and it reads back empty


@pytest.mark.parametrize("length", [233, 240, 251])
def test_a_photo_with_a_long_name_still_gets_its_sidecar(tmp_path, length):
    """`.NAME.EXT.xmp.<hex>.part` is 19 bytes longer than NAME.EXT.xmp: past 255 for
    names of about 233 bytes and up; the temporary name is then a short one."""
    photo = make_image(tmp_path / ("p" * (length - 4) + ".jpg"))
    assert write_sidecar(str(photo), ["tabby"], [])
    sidecar = Path(str(photo) + ".xmp")
    assert metagen.whole_packet(sidecar.read_bytes())
    assert sorted(os.listdir(tmp_path)) == sorted([photo.name, sidecar.name])


def test_a_photo_whose_sidecar_name_cannot_exist_is_named_in_the_warning(tmp_path):
    photo = make_image(tmp_path / ("q" * 248 + ".jpg"))  # NAME.jpg.xmp would be 256 bytes
    with pytest.raises(SidecarError) as caught:
        write_sidecar(str(photo), ["tabby"], [])
    assert photo.name in str(caught.value) and "too long" in str(caught.value)
    assert read_photo_meta(photo.read_bytes(), str(photo)) is None  # reading never complains
    assert sorted(os.listdir(tmp_path)) == [photo.name]
