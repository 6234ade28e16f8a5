"""Thumbnails by content hash (`/thumb/<sha256>?size=N`), cached on disk.

No path ever comes from the URL. The hash is looked up in the library; each of
its present paths that lies inside a watched folder is opened with the one
opener labelsd reads photos with (`fileio.open_regular`: a regular file,
reached without following a symlink, not larger than the size cap), its bytes
are checked against the hash (a file changed since the service read it is not
this content), and the thumbnail is made by the contact sheets' code
(serve/thumbnails.py, JPEG draft mode).

The cache lives in the user's cache folder (`~/.cache/labels/thumbs`), one file
per content and size, named by both: a content never changes, so a cached
thumbnail is never stale and the browser may keep it for a year. The folders
are the user's alone (0700; a folder that others may write is not used), and
each file is written beside its name and renamed into place, so a reader never
sees half of one. The cache is one file per photo and size, so it grows with what
is browsed (a 2048 px thumbnail of a 12 MP photo is 0.25-0.33 MB): it never takes
the last KEEP_FREE of its disk, which the library and the photos may share; below
that, thumbnails are made on every request and a warning says so once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from io import BytesIO
from pathlib import Path

import platformdirs
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from labelsd.fileio import open_regular
from labelsd.paths import shown, under_root
from labelsd.serve.photos import content_records

log = logging.getLogger(__name__)

SIZES = (128, 256, 512, 1024, 2048)  # the longest side a thumbnail may be asked for
DEFAULT_SIZE = 256
JPEG_QUALITY = 82
VERSION = "1"  # part of every cache name and ETag: a change in how thumbnails look renews them
KEEP_FREE = (1 << 30, 0.05)  # bytes and share of the disk: the cache leaves the smaller of the two free


def user_thumb_folder() -> Path:
    return Path(platformdirs.user_cache_dir("labels")) / "thumbs"


def parse_size(text: str | None) -> int | None:
    """The size asked for (DEFAULT_SIZE when none), or None when it is not one of SIZES."""
    if text is None:
        return DEFAULT_SIZE
    return int(text) if text.isdigit() and int(text) in SIZES else None


def etag(sha256: str, size: int) -> str:
    return f'"{sha256}-{size}-v{VERSION}"'


class ThumbCache:
    """JPEG thumbnails on disk, keyed by content and size. A cache that cannot be
    used (a folder others may write, a read-only home) is left off with one
    warning: thumbnails are then made on every request."""

    def __init__(self, folder: Path):
        self.folder: Path | None = folder
        try:
            _private_folder(folder)
        except OSError as err:
            log.warning("labels serve: not caching thumbnails in %s: %s", shown(folder),
                        err.strerror or err)
            self.folder = None
        self._warned_full = False

    def _room(self, data: bytes) -> bool:
        """Whether writing `data` leaves KEEP_FREE on the cache's disk (said once when not)."""
        try:
            fs = os.statvfs(self.folder)
        except OSError:
            return True  # the write itself will say
        keep = min(KEEP_FREE[0], int(fs.f_blocks * fs.f_frsize * KEEP_FREE[1]))
        if fs.f_bavail * fs.f_frsize - len(data) >= keep:
            return True
        if not self._warned_full:
            self._warned_full = True
            log.warning("labels serve: not caching more thumbnails in %s: under %d MiB would be left on "
                        "its disk; thumbnails are made on every request", shown(self.folder), keep >> 20)
        return False

    def _path(self, sha256: str, size: int) -> Path:
        return self.folder / sha256[:2] / f"{sha256}-{size}-v{VERSION}.jpg"

    def get(self, sha256: str, size: int) -> bytes | None:
        if self.folder is None:
            return None
        try:
            fd = os.open(self._path(sha256, size), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return fh.read()

    def put(self, sha256: str, size: int, data: bytes) -> None:
        if self.folder is None or not self._room(data):
            return
        target = self._path(sha256, size)
        try:
            _private_folder(target.parent)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")  # 0600
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as err:  # a full disk: the thumbnail is still served
            log.debug("cannot cache %s: %s", shown(target), err)


def _private_folder(folder: Path) -> None:
    """Make `folder` (0700) or check that it is a folder of ours no one else may write."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(1, "not a folder of this user's", str(folder))
    if st.st_mode & 0o022:
        raise PermissionError(1, "other users may write in it", str(folder))


def make_thumbnail(records: list[dict], roots: list[str], size: int) -> bytes | None:
    """A JPEG thumbnail of the content the records hold (`content_records`), from
    the first of its present paths inside a watched root whose file is a regular
    file with exactly that content; None when there is none."""
    # Pillow and numpy (through the decoder's limits) load here, not at start-up:
    # `server.warm_up` imports them once the server is ready.
    from labelsd.model.decode import max_file_bytes
    from labelsd.serve.thumbnails import thumbnail_of

    sha256 = records[0]["sha256"] if records else None
    for rec in records:
        path = rec["path"]
        if rec["status"] == "missing" or not any(under_root(path, root) for root in roots):
            continue
        try:
            fh, _ = open_regular(path, max_bytes=max_file_bytes())
            with fh:
                data = fh.read()
        except Exception as err:  # noqa: BLE001 - gone, unreadable, not regular: try another path
            log.debug("thumbnail: cannot read %s: %s", shown(path), err)
            continue
        if hashlib.sha256(data).hexdigest() != sha256:
            log.debug("thumbnail: %s changed since it was read", shown(path))
            continue
        thumb = thumbnail_of(BytesIO(data), size, path)
        if thumb.image is None:
            return None  # the content itself cannot be shown: another path holds the same bytes
        out = BytesIO()
        thumb.image.save(out, "JPEG", quality=JPEG_QUALITY)
        return out.getvalue()
    return None


def thumb_view(request: Request) -> Response:
    """GET /thumb/<sha256>?size=N: the cached thumbnail, or one made now; 304 when
    the browser's copy (its ETag) is current; 404 for a hash the library does not
    hold or whose picture cannot be shown; 400 for a size not in SIZES."""
    site = request.app.state.site
    size = parse_size(request.query_params.get("size"))
    if size is None:
        return PlainTextResponse(f"size must be one of {', '.join(map(str, SIZES))}\n",
                                 status_code=400)
    sha256 = request.path_params["sha256"]
    records = content_records(site.reader(), sha256)
    if not records:
        return PlainTextResponse("no photo with that content hash\n", status_code=404)
    headers = {"etag": etag(sha256, size), "cache-control": "private, max-age=31536000, immutable"}
    if headers["etag"] in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    data = site.thumbs.get(sha256, size)
    if data is None:
        data = make_thumbnail(records, site.roots(), size)
        if data is None:
            return PlainTextResponse("no picture of this photo can be shown (its file is gone, "
                                     "changed, unreadable or outside the watched folders)\n",
                                     status_code=404)
        site.thumbs.put(sha256, size, data)
    return Response(data, media_type="image/jpeg", headers=headers)


__all__ = ["DEFAULT_SIZE", "SIZES", "ThumbCache", "etag", "make_thumbnail", "parse_size",
           "thumb_view", "user_thumb_folder"]
