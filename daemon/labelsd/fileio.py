"""Files in and out. `open_regular` is the one way labelsd opens a file it
reads because of a photo (the pipeline's reader, the gallery's thumbnails, the
photo's XMP sidecar through `read_regular`): never through a symlink, never
blocking, a regular file or nothing, and never more than a cap (tests/test_opens.py
proves nothing else in the daemon opens such a file). `atomic_output` writes an
output file atomically: shared by `labels export -o` (text), the contact
sheets of `labels gallery` (bytes), XMP sidecars and the small JSON caches of
`~/.cache/labels` (labelsd.owned: file digests, the bf16 measurement); a device or
FIFO named as the output is written in place, never replaced."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, BinaryIO

from labelsd.errors import ImageError
from labelsd.paths import under_root

# O_NOFOLLOW: a symlink swapped in for a queued photo (`ln -s /etc/shadow x;
# mv -T x photo.png`) is refused, not followed. O_NONBLOCK: a FIFO or device
# node swapped in does not block the open (a FIFO with no writer would block
# forever); fstat then refuses anything but a regular file.
_OPEN_FLAGS = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
               | getattr(os, "O_CLOEXEC", 0))

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


class NotARegularFile(ImageError):
    """The path is not a regular file (a FIFO, device, socket, folder or symlink),
    or is reached through a symlinked folder: labelsd does not read it."""


class FileTooLarge(ImageError):
    """The file is larger than the configured size cap (`max_file_mb`)."""


def file_sha256(path: str | os.PathLike | BinaryIO) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB pieces (weights, converted models);
    `path` may be a file open for reading (read from its start)."""
    digest = hashlib.sha256()
    if hasattr(path, "read"):
        path.seek(0)
        for chunk in iter(lambda: path.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()
    with open(path, "rb") as f:
        return file_sha256(f)


def kind_of(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str, *, max_bytes: int | None = None, links_within: Sequence[str] = (),
                 what: str = "an image file", limit: str = "max_file_mb") -> tuple[BinaryIO, os.stat_result]:
    """Open `path` for reading if it is a regular file reached without following
    any symlink, and return it with its fstat. Raises NotARegularFile (with the
    kind in words) or FileTooLarge, or OSError as open() does (FileNotFoundError,
    PermissionError ...). Nothing else is opened: what the watched folder's
    owner links to stays unread. `links_within` (`labels scan`): a symlinked
    file whose target resolves inside one of these folders is opened at its
    target, by the same rules. `what` and `limit` name the file and its size
    cap in the errors' words."""
    try:
        before = os.lstat(path)
    except OSError:
        before = None  # open() below raises the same error, or the file just appeared
    if before is not None and stat.S_ISLNK(before.st_mode) and links_within:
        target = os.path.realpath(path)
        if any(under_root(target, root) for root in links_within):
            return open_regular(target, max_bytes=max_bytes, what=what, limit=limit)
    if before is not None and not stat.S_ISREG(before.st_mode):
        # Not even opened: opening some device nodes has side effects.
        raise NotARegularFile(f"is {kind_of(before.st_mode)}, not {what}")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        if err.errno == errno.ELOOP:  # swapped for a symlink since the lstat
            raise NotARegularFile(f"is a symbolic link, not {what} (labelsd does "
                                  "not follow links in watched folders)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"is {kind_of(st.st_mode)}, not {what}")
        _check_no_linked_folder(fd, path)
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileTooLarge(f"file is {_size_text(st.st_size)}, larger than the "
                               f"{_size_text(max_bytes)} limit ({limit})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str, max_bytes: int, *, what: str, limit: str) -> bytes:
    """The bytes of `path`, opened by `open_regular` (a regular file, no link
    followed, no blocking), and no more than `max_bytes` of them: FileTooLarge
    when the file is larger, or grows past it while read."""
    fh, _ = open_regular(path, max_bytes=max_bytes, what=what, limit=limit)
    with fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"grew past the {_size_text(max_bytes)} limit while read")
    return data


def _check_no_linked_folder(fd: int, path: str) -> None:
    """O_NOFOLLOW guards the last component only: a folder on the way swapped for
    a symlink (`ln -s /etc d; mv -T d album`) would still be followed. The kernel
    knows the path it really opened; it must be the one asked for."""
    wanted = os.path.abspath(path)
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: resolve the folder instead (racy, but no worse)
        opened = os.path.join(os.path.realpath(os.path.dirname(wanted)), os.path.basename(wanted))
    if opened.endswith(" (deleted)"):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    if opened != wanted:
        raise NotARegularFile("is reached through a symbolically linked folder, not "
                              "read (labelsd does not follow links in watched folders)")


def _size_text(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.0f} MiB"
    return f"{n / (1 << 10):.0f} KiB"


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", encoding: str = "utf-8",
                  *, follow: bool = True, private: bool = False) -> Iterator[IO]:
    """A file that appears at `path` only when the block succeeds: written
    beside it under a temporary name, flushed to disk, then renamed over it.
    On error the temporary file is removed and `path` is left as it was.
    `mode` is "w" (text in `encoding`, newlines as written) or "wb" (bytes).

    `follow` (a path a person named, `labels export -o`): a symlink is followed,
    as `sort -o` does, and its target replaced (the link stays); an existing
    target that is not a regular file (/dev/null, /dev/stdout, a FIFO, a
    device) is opened and written in place, never replaced: renaming over
    /dev/null as root once made it a regular file. Such a write is not atomic.
    `follow=False` (files labelsd writes on its own in watched folders, where a
    link may have been planted): the path itself is replaced, whatever it is.
    `private`: the file is 0600 (the service's caches), not 0666 through the umask."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output writes with mode 'w' or 'wb', not {mode!r}")
    target = os.path.abspath(os.fspath(path))
    text = {"encoding": encoding, "newline": ""} if mode == "w" else {}
    if follow:
        try:
            st = os.stat(target)  # through any symlink
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(target, mode, **text) as out:  # no O_CREAT race: it exists
                yield out
            return
        target = os.path.realpath(target)
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, _temporary_name(folder, name))
    # 0o666 through the umask, as any file a person writes (mkstemp would give 0600);
    # a umask only takes bits away, so 0o600 is 0600 whatever it is.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, mode, **text) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def name_max(folder: str) -> int:
    """The longest file name the folder's file system takes, in bytes (255 on Linux)."""
    try:
        return os.pathconf(folder or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _temporary_name(folder: str, name: str) -> str:
    """Hidden and partial (`.NAME.<hex>.part`: the watcher ignores it), or, when that
    would be longer than the file system allows (NAME of about 233 bytes and up),
    a short `.labelsd-<hex>.part`."""
    token = secrets.token_hex(6)
    tmp = f".{name}.{token}.part"
    return tmp if len(os.fsencode(tmp)) <= name_max(folder) else f".labelsd-{token}.part"


def no_room_beside(path: str | os.PathLike) -> bool:
    """Whether the file system holding `path` (a file, existing or not) has under
    1 MiB left. SQLite reports some writes that meet a full disk (the WAL index
    growing, a migration's new pages) as a bare "disk I/O error": this tells a full
    disk from a failing one. False when the folder cannot be looked at."""
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(os.path.expanduser(path))))
    except (OSError, ValueError):
        return False
    return fs.f_bavail * fs.f_frsize < 1 << 20


__all__ = ["FileTooLarge", "NotARegularFile", "atomic_output", "kind_of", "name_max", "no_room_beside",
           "open_regular", "read_regular"]
