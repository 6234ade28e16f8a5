"""atomic_output: a regular file is replaced atomically; what is not a regular file
(a FIFO, a device, /dev/stdout) is written in place, never replaced; a symlink
is followed (as `sort -o` does) unless the caller asks for the path itself."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from labelsd.fileio import atomic_output


def test_a_regular_file_is_replaced_atomically(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    inode = target.stat().st_ino
    with atomic_output(target) as out:
        out.write("new")
    assert target.read_text() == "new"
    assert target.stat().st_ino != inode  # a new file renamed in, not rewritten
    assert os.listdir(tmp_path) == ["out.csv"]


def test_a_fifo_is_written_in_place_not_replaced(tmp_path):
    """`labels export -o /dev/null` (or a named pipe) once replaced the device with
    a regular file. A FIFO with a reader stands in for the device here."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []

    def read() -> None:
        with open(fifo, encoding="utf-8") as f:  # blocks until a writer opens it
            got.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with atomic_output(fifo) as out:
            out.write("a,b\n1,2\n")
        reader.join(10)
        assert got == ["a,b\n1,2\n"]
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert os.listdir(tmp_path) == ["pipe"]  # no temporary file beside it
    finally:
        if reader.is_alive():  # unblock the reader's open if the write never came
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            reader.join(10)


def test_a_symlink_is_followed_and_its_target_replaced(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with atomic_output(link) as out:
        out.write("new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["link.json", "real.json"]


def test_a_symlink_to_a_folder_elsewhere_is_followed_there(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    real = tmp_path / "elsewhere" / "real.json"
    real.write_text("old")
    (tmp_path / "here").mkdir()
    link = tmp_path / "here" / "link.json"
    link.symlink_to(os.path.relpath(real, link.parent))
    with atomic_output(link) as out:
        out.write("new")
    assert real.read_text() == "new" and link.is_symlink()
    assert os.listdir(tmp_path / "elsewhere") == ["real.json"]


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "new.json")
    with atomic_output(link) as out:
        out.write("made")
    assert link.is_symlink() and (tmp_path / "new.json").read_text() == "made"


def test_without_following_the_path_itself_is_replaced(tmp_path):
    """Files labelsd writes by itself into watched folders (XMP sidecars) never
    follow a link someone planted there: the link is replaced, its target untouched."""
    real = tmp_path / "real.xmp"
    real.write_text("theirs")
    link = tmp_path / "photo.xmp"
    link.symlink_to(real)
    with atomic_output(link, "wb", follow=False) as out:
        out.write(b"ours")
    assert not link.is_symlink() and link.read_bytes() == b"ours"
    assert real.read_text() == "theirs"


def test_in_place_write_errors_propagate_and_leave_no_temporary_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    holder = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so open() won't block
    try:
        with pytest.raises(RuntimeError), atomic_output(fifo) as out:
            out.write("half")
            raise RuntimeError("disk on fire")
    finally:
        os.close(holder)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]
