"""What a photo says of itself: when it was taken (EXIF date), with what camera,
where (GPS), and the keywords other programs gave it (embedded XMP dc:subject,
IPTC keywords, and its sidecar's dc:subject).

Read from the bytes the pipeline already holds (no second read of the photo);
exiv2 parses only the metadata segments, so this costs well under a millisecond
even for a 12 MP JPEG. Anything unreadable is simply absent: metadata never
fails a photo.
"""

from __future__ import annotations

import logging
import os
import re

from labelsd.errors import ImageError
from labelsd.fileio import read_regular
from labelsd.records import PhotoMeta
from labelsd.xmp import exiv

log = logging.getLogger(__name__)

MAX_KEYWORD_LENGTH = 200  # the width of tags.tag
HIERARCHY_ROOT = "labelsd"  # labelsd|tabby in lr:hierarchicalSubject, labelsd/tabby in digiKam:TagsList

_DATE_KEYS = ("Exif.Photo.DateTimeOriginal", "Exif.Photo.DateTimeDigitized", "Exif.Image.DateTime")
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


def read_photo_meta(data: bytes, path: str | None = None) -> PhotoMeta | None:
    """The metadata of a photo from its bytes (and the sidecar beside `path`, if
    any). None when the photo carries nothing exiv2 can read. Never raises:
    metadata is a bonus, it never fails a photo."""
    sidecar = _read_sidecar(path) if path else None
    facts: dict = {}
    keywords: list[str] = []
    try:
        exiv2 = exiv.load()
        with exiv.LOCK:
            try:
                image = exiv2.ImageFactory.open(data)
                image.readMetadata()
                exif, iptc, xmp = image.exifData(), image.iptcData(), image.xmpData()
                facts = {"taken_at": _taken_at(exif, xmp), "camera": _camera(exif), **_gps(exif)}
                keywords += exiv.values(xmp, "Xmp.dc.subject")
                keywords += exiv.values(iptc, "Iptc.Application2.Keywords")
            except Exception as err:  # noqa: BLE001 - a format or a field exiv2 cannot read
                log.debug("no metadata read from %s: %s", path or "a photo", err)
            if sidecar is not None:
                keywords += _sidecar_keywords(sidecar, path)
    except Exception:  # noqa: BLE001 - see the docstring
        log.debug("reading the metadata of %s failed", path or "a photo", exc_info=True)
    meta = PhotoMeta(**facts, keywords=tuple(_keywords(keywords)))
    return meta if meta != PhotoMeta() else None


def _read_sidecar(path: str) -> bytes | None:
    try:
        return read_sidecar(path)
    except (OSError, ImageError) as err:  # nothing to import; the photo is fine
        log.info("the sidecar of %s is not read (%s)", path, _why(err))
        return None


def _why(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def _sidecar_keywords(data: bytes, path: str) -> list[str]:
    """The sidecar's keywords that labelsd did not write itself (exiv.LOCK held)."""
    exiv2 = exiv.load()
    try:
        image = exiv2.ImageFactory.open(data)
        image.readMetadata()
    except exiv2.Exiv2Error as err:
        log.info("cannot read the sidecar of %s (%s); its keywords are not imported",
                 os.path.basename(path), err)
        return []
    xmp = image.xmpData()
    ours = {k.casefold() for k in exiv.values(xmp, "Xmp.labelsd.keywords")}
    return [k for k in exiv.values(xmp, "Xmp.dc.subject") if k.casefold() not in ours]


def _keywords(found: list[str]) -> list[str]:
    """Trimmed, non-empty, not too long, first spelling of each (case-insensitive)."""
    kept: dict[str, str] = {}
    for word in found:
        word = word.strip()
        if word and len(word) <= MAX_KEYWORD_LENGTH:
            kept.setdefault(word.casefold(), word)
    return list(kept.values())


def _taken_at(exif, xmp) -> str | None:
    for data, keys in ((exif, _DATE_KEYS), (xmp, _XMP_DATE_KEYS)):
        for key in keys:
            for text in exiv.values(data, key):
                found = _EXIF_DATE.match(text.strip())
                if found and found.group(1) != "0000":
                    y, mo, d, h, mi, sec = found.groups()
                    return f"{y}-{mo}-{d}T{h}:{mi}:{sec or '00'}"
    return None


def _camera(exif) -> str | None:
    make = " ".join(exiv.values(exif, "Exif.Image.Make")).strip()
    model = " ".join(exiv.values(exif, "Exif.Image.Model")).strip()
    if not model:
        return make or None
    brand = make.split(" ")[0].casefold() if make else ""
    if not brand or model.casefold().startswith(brand):  # "Canon" + "Canon EOS R5"
        return model
    return f"{make} {model}"


def _gps(exif) -> dict:
    lat = _degrees(exif, "Exif.GPSInfo.GPSLatitude", "Exif.GPSInfo.GPSLatitudeRef", "S")
    lon = _degrees(exif, "Exif.GPSInfo.GPSLongitude", "Exif.GPSInfo.GPSLongitudeRef", "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return {}
    return {"gps_lat": lat, "gps_lon": lon}


def _degrees(exif, key: str, ref_key: str, negative: str) -> float | None:
    exiv2 = exiv.load()
    found = exif.findKey(exiv2.ExifKey(key))
    if found == exif.end() or found.count() != 3:
        return None
    parts = []
    for i in range(3):
        num, den = found.toRational(i)
        if den == 0:
            return None
        parts.append(num / den)
    value = parts[0] + parts[1] / 60 + parts[2] / 3600
    ref = "".join(exiv.values(exif, ref_key)).strip().upper()
    return round(-value if ref.startswith(negative) else value, 7)


__all__ = ["HIERARCHY_ROOT", "read_photo_meta", "read_sidecar", "sidecar_path"]
