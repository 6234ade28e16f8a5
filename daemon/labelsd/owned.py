"""Files only the service (and root) can write: the caches whose contents decide what
the service runs (the converted model, the checksums remembered for it, the bf16
measurement, keras' settings).

Under the system unit the service runs with UMask 0007 in a 2770 state folder it shares
with the group `labels`, so what it creates is, by default, the group's to write: a
member could replace the converted model and the record that vouches for it, and choose
every label. So:

- folders are made 0700 and files 0600, whatever the umask (`private_folder`,
  `write_json`);
- a file is trusted only when it is a regular file (not a symbolic link) owned by the
  service's user or root that no one else may write, in a folder of the same kind,
  reached from / through folders owned by the service's user or root (`open_trusted`).
  The walk holds each folder open and checks the folder it entered, so renaming the
  entries of a folder others may write on the way (the 2770 state folder is one) can
  only trade the service's own folders, never bring in someone else's; and the file is
  read through the descriptor that was checked (`fd_path` names it for a library that
  wants a path). A record beside a file cannot vouch for it when the same people can
  rewrite both; who can write them can.
- A cache folder of the service's that others could write (an older labelsd made it
  2770) is made the service's alone again, and every file below it that others could
  have written is removed (said once at WARNING). A folder of someone else's is not
  used: `Untrusted`, which callers turn into "made again" or "not kept".
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

import platformdirs

from labelsd.fileio import atomic_output, kind_of
from labelsd.paths import shown

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
_lock = threading.Lock()
_said: set[str] = set()
_scratch: list[Path] = []


class Untrusted(Exception):
    """A file or folder someone other than the service (and root) can write, or could
    have written: not used for anything the service runs."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path} {reason}")
        self.path = str(path)
        self.reason = reason


def cache_dir() -> Path:
    """The user's cache (`~/.cache/labels`; the system service's HOME is its state folder)."""
    return Path(platformdirs.user_cache_dir("labels"))


def say_once(key: str, message: str) -> None:
    """`message` at WARNING, the first time `key` comes up in this process."""
    with _lock:
        if key in _said:
            return
        _said.add(key)
    log.warning("%s", message)


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check(st: os.stat_result, path: str, *, private: bool) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise Untrusted(path, f"belongs to {_owner(st.st_uid)}, not to the service")
    if private and st.st_mode & _OTHERS_WRITE:
        raise Untrusted(path, f"can be written by others (mode {stat.S_IMODE(st.st_mode):04o})")


def _walk(folder: str) -> int:
    """An O_PATH descriptor of the absolute, resolved `folder`, every folder from / to it
    owned by the service's user or root (checked on the folder each step entered)."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        _check(os.fstat(fd), "/", private=False)
        here = "/"
        for part in (p for p in folder.split("/") if p):
            here = os.path.join(here, part)
            try:
                entered = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):  # a link swapped in since realpath
                    raise Untrusted(here, "is not a folder (a symbolic link?)") from None
                raise
            os.close(fd)
            fd = entered
            _check(os.fstat(fd), here, private=False)
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_folder(folder: str | os.PathLike) -> None:
    """Untrusted unless `folder` is the service's (or root's) and no one else writes it,
    reached through folders of the service's or root's; OSError as open() raises."""
    real = os.path.realpath(folder)
    fd = _walk(real)
    try:
        _check(os.fstat(fd), real, private=True)
    finally:
        os.close(fd)


def open_trusted(path: str | os.PathLike) -> BinaryIO:
    """`path` open for reading when only the service (or root) can have written it:
    Untrusted otherwise; FileNotFoundError (an OSError) when it is not there."""
    path = os.path.abspath(path)
    folder, name = os.path.realpath(os.path.dirname(path)), os.path.basename(path)
    dfd = _walk(folder)
    try:
        _check(os.fstat(dfd), folder, private=True)
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise Untrusted(path, "is a symbolic link") from None
        raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Untrusted(path, f"is {kind_of(st.st_mode)}, not a regular file")
        _check(st, path, private=True)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def fd_path(f: BinaryIO, path: str | os.PathLike) -> str:
    """A path that opens the very file `f` is (for a library that takes a path): renaming
    or replacing `path`, the name it was opened by, changes nothing. `path` itself where
    there is no /proc (then it is as good as the folders that hold it)."""
    here = f"/proc/self/fd/{f.fileno()}"
    return here if os.path.exists(here) else os.fspath(path)


def _make(folder: Path) -> None:
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        try:
            os.mkdir(made, 0o700)
        except FileExistsError:
            continue
        os.chmod(made, 0o700)  # exactly: no bit of the umask's, no setgid inherited


def private_folder(folder: str | os.PathLike, *,
                   remove_others_files: bool | Collection[str] = True) -> Path:
    """`folder`, made 0700 where it is missing (and any folder missing above it), for
    files only the service writes. One of the service's that others can write is made
    0700 again, with every folder of the service's below it that others can write, and
    every file below it that another user owns or others can write is removed (only the
    files of these names directly in it, where `remove_others_files` names some; none
    where it is False); said once at WARNING. Untrusted where it, or a folder on the way,
    belongs to someone else; OSError where it cannot be made."""
    folder = Path(os.path.abspath(folder))
    _make(folder)
    real = os.path.realpath(folder)
    fd = _walk(real)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_mode & _OTHERS_WRITE:
        _repair(real, stat.S_IMODE(st.st_mode), remove_others_files)
    return folder


def _repair(folder: str, mode: int, remove: bool | Collection[str]) -> None:
    os.chmod(folder, 0o700)
    removed = []
    for top, folders, files in os.walk(folder):  # symbolic links are not followed
        for name in list(folders):
            st = os.lstat(os.path.join(top, name))
            if st.st_uid not in (0, os.geteuid()):
                folders.remove(name)  # someone else's: refused where it is used
            elif st.st_mode & _OTHERS_WRITE:
                os.chmod(os.path.join(top, name), 0o700)
        for name in files:
            if remove is not True and not (remove and top == folder and name in remove):
                continue
            st = os.lstat(os.path.join(top, name))
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()) \
                    or st.st_mode & _OTHERS_WRITE:
                os.unlink(os.path.join(top, name))
                removed.append(name)
    named = ", ".join(shown(name) for name in removed[:3])
    named += f" and {len(removed) - 3} more" if len(removed) > 3 else ""
    gone = (f"; removed {named}, which someone else could have written (made again when "
            "needed)") if removed else ""
    say_once(f"repaired {folder}", f"{shown(folder)} could be written by others (mode {mode:04o}): it is "
             f"the service's alone now (0700){gone}")


def scratch_folder() -> Path:
    """A folder of this process's alone (0700 in the temporary folder), removed at exit:
    where a converted model goes when no cache folder can be trusted."""
    import atexit

    with _lock:
        if not _scratch:
            _scratch.append(Path(tempfile.mkdtemp(prefix="labelsd-")))
            atexit.register(shutil.rmtree, _scratch[0], True)
    check_folder(_scratch[0])
    return _scratch[0]


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in `path`, a cache only the service writes: {} when it is missing,
    unreadable or not an object, and when someone else can have written it (said once at
    WARNING; the next `write_json` replaces it)."""
    try:
        private_folder(os.path.dirname(os.path.abspath(path)))
        with open_trusted(path) as f:
            found = json.load(f)
    except Untrusted as err:
        say_once(f"untrusted {err.path}", f"not reading {shown(path)}: {shown(err.path)} {err.reason}")
        return {}
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def write_json(path: str | os.PathLike, data, *, indent: int | None = None) -> None:
    """`data` as JSON at `path`, atomically, 0600 in a folder `private_folder` made;
    OSError or Untrusted as raised."""
    private_folder(os.path.dirname(os.path.abspath(path)))
    with atomic_output(path, follow=False, private=True) as out:
        json.dump(data, out, indent=indent)


__all__ = ["Untrusted", "cache_dir", "check_folder", "fd_path", "open_trusted", "private_folder",
           "read_json", "say_once", "scratch_folder", "write_json"]
