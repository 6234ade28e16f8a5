"""What a photo says of itself: when it was taken (EXIF date), with what camera,
where (GPS), and the keywords other programs gave it (embedded XMP dc:subject,
IPTC keywords, and its sidecar's dc:subject).

Read from the bytes the pipeline already holds (no second read of the photo),
with bounds whatever the photo holds: blocks.py finds its EXIF, IPTC and XMP
blocks and leaves out any over 1 MiB; tiff.py reads the few EXIF fields and the
IPTC keywords itself; exiv2 parses the XMP only, bounded by exiv.read_xmp. At
most MAX_KEYWORDS keywords of at most MAX_KEYWORD_LENGTH characters become tags;
the rest are counted and logged, once per photo. Anything unreadable is simply
absent: metadata never fails a photo.
"""

from __future__ import annotations

import errno
import logging
import re

from labelsd.errors import ImageError
from labelsd.fileio import read_regular
from labelsd.paths import shown
from labelsd.records import PhotoMeta
from labelsd.xmp import exiv, suppression
from labelsd.xmp.blocks import find_blocks
from labelsd.xmp.tiff import iptc_keywords, read_exif

log = logging.getLogger(__name__)

MAX_KEYWORD_LENGTH = 200  # the width of tags.tag
CAMERA_WIDTH = 200  # the width of contents.camera
# Keywords imported as tags from one photo. A photo manager's keywords for one photo
# are a handful to a few dozen (a Lightroom hierarchy written out flat: under 100).
MAX_KEYWORDS = 256
HIERARCHY_ROOT = "labelsd"  # labelsd|tabby in lr:hierarchicalSubject, labelsd/tabby in digiKam:TagsList

_XMP_DATE_KEYS = ("Xmp.exif.DateTimeOriginal", "Xmp.photoshop.DateCreated", "Xmp.xmp.CreateDate")
_EXIF_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?")


def sidecar_path(image_path: str) -> str:
    """NAME.EXT.xmp: the name digiKam, darktable and Immich look for."""
    return image_path + ".xmp"


def read_sidecar(image_path: str) -> bytes | None:
    """The bytes of the photo's sidecar; None when there is none. Through the safe
    opener (fileio.read_regular): a FIFO, device, folder or symlink put there is
    never opened or followed (NotARegularFile), nor a file over exiv.MAX_XMP_BYTES
    read (FileTooLarge); other OSErrors as open() raises them."""
    try:
        return read_regular(sidecar_path(image_path), exiv.MAX_XMP_BYTES,
                            what="an XMP sidecar", limit="the XMP size cap")
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:  # NAME.EXT.xmp cannot exist beside this photo
            return None
        raise


class _Keywords:
    """The keywords kept (trimmed, first spelling of each), and how many were not."""

    def __init__(self):
        self.kept: dict[str, str] = {}
        self.too_long = 0
        self.over = 0

    def add(self, words) -> None:
        for word in words:
            word = "".join(ch for ch in word if ch >= " ").strip()
            if not word or word.casefold() in self.kept:
                continue
            if len(word) > MAX_KEYWORD_LENGTH:
                self.too_long += 1
            elif len(self.kept) >= MAX_KEYWORDS:
                self.over += 1
            else:
                self.kept[word.casefold()] = word


def read_photo_meta(data: bytes, path: str | None = None) -> PhotoMeta | None:
    """The metadata of a photo from its bytes (and the sidecar beside `path`, if
    any). None when the photo carries nothing labelsd reads. Never raises:
    metadata is a bonus, it never fails a photo."""
    name = shown(path) if path else "a photo"
    facts: dict = {}
    keywords = _Keywords()
    away = _Keywords()  # what a sidecar says a person took away (suppression.py)
    notes: list[str] = []
    try:
        blocks = find_blocks(data)
        notes += blocks.refused
        exif = read_exif(blocks.exif) if blocks.exif is not None else {}
        xmp_dates: list[str] = []
        if blocks.xmp is not None:
            xmp_dates = _xmp(blocks.xmp, keywords, notes, "XMP")
        if blocks.iptc is not None:
            keywords.add(iptc_keywords(blocks.iptc))
        facts = {"taken_at": _taken_at([*exif.get("dates", ()), *xmp_dates]),
                 "camera": _camera(exif.get("make", ""), exif.get("model", "")),
                 **_gps(exif.get("gps"))}
        sidecar = _read_sidecar(path) if path else None
        if sidecar is not None:
            _xmp(sidecar, keywords, notes, "sidecar", away=away)
    except Exception:  # noqa: BLE001 - see the docstring
        log.debug("reading the metadata of %s failed", name, exc_info=True)
    if keywords.over or keywords.too_long:
        notes.append(_dropped_note(keywords))
    if notes:
        log.info("%s: %s", name, "; ".join(notes))
    meta = PhotoMeta(**facts, keywords=tuple(keywords.kept.values()),
                     suppressed=tuple(away.kept.values()))
    return meta if meta != PhotoMeta() else None


def _xmp(packet: bytes, keywords: _Keywords, notes: list[str], what: str,
         away: _Keywords | None = None) -> list[str]:
    """Add the keywords of an XMP packet; return its dates. A sidecar's (`away`
    given): only the keywords labelsd did not write itself, and into `away` what it
    says a person took away (suppression.py: a label among them is a rejection)."""
    with exiv.locked() as exiv2:
        try:
            xmp = exiv.read_xmp(packet)
        except (exiv.XmpRefused, exiv2.Exiv2Error) as err:
            notes.append(f"its {what} is not read ({_why(err)})")
            return []
        words = exiv.values(xmp, "Xmp.dc.subject")
        if away is not None:
            ours = {k.casefold() for k in suppression.written(xmp)}
            words = [k for k in words if k.casefold() not in ours]
            away.add(suppression.taken_away(xmp).values())
        keywords.add(words)
        return [text for key in _XMP_DATE_KEYS for text in exiv.values(xmp, key)]


def _read_sidecar(path: str) -> bytes | None:
    try:
        return read_sidecar(path)
    except (OSError, ImageError) as err:  # nothing to import; the photo is fine
        log.info("the sidecar of %s is not read (%s)", shown(path), _why(err))
        return None


def _why(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    if len(err.args) == 2 and isinstance(err.args[1], str):
        return err.args[1]  # exiv2's (code, message)
    return str(err)


def _dropped_note(keywords: _Keywords) -> str:
    parts = []
    if keywords.over:
        parts.append(f"{keywords.over:,} more keyword(s) than the {MAX_KEYWORDS} imported as tags")
    if keywords.too_long:
        parts.append(f"{keywords.too_long:,} keyword(s) longer than {MAX_KEYWORD_LENGTH} characters")
    return ", ".join(parts) + " not imported"


def _taken_at(dates: list[str]) -> str | None:
    for text in dates:
        found = _EXIF_DATE.match(text.strip())
        if found and found.group(1) != "0000":
            y, mo, d, h, mi, sec = found.groups()
            return f"{y}-{mo}-{d}T{h}:{mi}:{sec or '00'}"
    return None


def _camera(make: str, model: str) -> str | None:
    if not model:
        camera = make or None
    else:
        brand = make.split(" ")[0].casefold() if make else ""
        camera = model if not brand or model.casefold().startswith(brand) else f"{make} {model}"
    return camera[:CAMERA_WIDTH] if camera else None


def _gps(found) -> dict:
    if not found:
        return {}
    lat_ref, lat, lon_ref, lon = found
    lat, lon = _degrees(lat, lat_ref, "S"), _degrees(lon, lon_ref, "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return {}
    return {"gps_lat": lat, "gps_lon": lon}


def _degrees(parts: list[float] | None, ref: str, negative: str) -> float | None:
    if parts is None:
        return None
    value = parts[0] + parts[1] / 60 + parts[2] / 3600
    return round(-value if ref.strip().upper().startswith(negative) else value, 7)


__all__ = ["HIERARCHY_ROOT", "MAX_KEYWORDS", "MAX_KEYWORD_LENGTH", "read_photo_meta", "read_sidecar",
           "sidecar_path"]
