"""The few EXIF fields labelsd keeps (date, camera, GPS), read from a TIFF
structure (the EXIF block of a JPEG, PNG, WebP, HEIF or AVIF, or a TIFF file
itself), and IPTC keywords from IPTC-IIM datasets and Photoshop resource blocks.

Read here, in a few lines, rather than by exiv2, because exiv2 copies the value
of every entry of every directory it meets: 250 entries pointing at the same
1 MiB of a 1 MiB EXIF block cost it 500 MB (measured), and its maker-note
parsers meet every camera maker's quirks. This reader follows the two pointers
it needs (IFD0 to the Exif and GPS directories), each once, reads only the
entries it names, and no value longer than MAX_TEXT: whatever the block holds,
loops and overlapping values included, it reads a few hundred bytes.
"""

from __future__ import annotations

import struct

MAX_ENTRIES = 1000  # entries read from one directory (a camera writes fewer than 100)
MAX_TEXT = 256  # characters kept of a text value (make, model, date)

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, DATE_TIME = 0x010F, 0x0110, 0x0132
DATE_ORIGINAL, DATE_DIGITIZED = 0x9003, 0x9004
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4
XMP_TAG, IPTC_TAG, PHOTOSHOP_TAG = 700, 33723, 34377  # in a TIFF file's IFD0


class Tiff:
    """A TIFF structure in `data` (bytes or a memoryview; nothing is copied but
    the values read). Every read is bounds-checked: a bad offset reads nothing."""

    def __init__(self, data):
        self.data = memoryview(data)
        head = bytes(self.data[:8])
        if head[:4] == b"II*\x00":
            self.order = "<"
        elif head[:4] == b"MM\x00*":
            self.order = ">"
        else:
            raise ValueError("not a TIFF structure")
        self.ifd0 = self._u32(4)

    def _u16(self, at: int) -> int:
        return struct.unpack_from(self.order + "H", self.data, at)[0]

    def _u32(self, at: int) -> int:
        return struct.unpack_from(self.order + "I", self.data, at)[0]

    def entries(self, offset: int | None) -> dict[int, tuple[int, int, int]]:
        """{tag: (type, count, where its value starts)} of the directory at `offset`;
        {} when there is none there."""
        if offset is None or offset < 8 or offset + 2 > len(self.data):
            return {}
        count = min(self._u16(offset), MAX_ENTRIES, (len(self.data) - offset - 2) // 12)
        found = {}
        for n in range(count):
            at = offset + 2 + 12 * n
            tag, kind, items = struct.unpack_from(self.order + "HHI", self.data, at)
            size = _TYPE_SIZES.get(kind, 0) * items
            start = at + 8 if size <= 4 else self._u32(at + 8)
            if size and start + size <= len(self.data):
                found.setdefault(tag, (kind, items, start))
        return found

    def raw(self, entries: dict, tag: int, most: int) -> memoryview | None:
        """The bytes of a value, when it has at most `most` of them."""
        if tag not in entries:
            return None
        kind, items, start = entries[tag]
        size = _TYPE_SIZES[kind] * items
        return self.data[start:start + size] if size <= most else None

    def text(self, entries: dict, tag: int) -> str:
        if tag not in entries or entries[tag][0] not in (1, 2, 7):
            return ""
        kind, items, start = entries[tag]
        value = bytes(self.data[start:start + min(items, MAX_TEXT)]).split(b"\x00", 1)[0]
        return decode_text(value).strip()

    def pointer(self, entries: dict, tag: int) -> int | None:
        if tag not in entries or entries[tag][0] not in (4, 13) or entries[tag][1] < 1:
            return None
        return self._u32(entries[tag][2])

    def rationals(self, entries: dict, tag: int, n: int) -> list[float] | None:
        if tag not in entries or entries[tag][0] != 5 or entries[tag][1] != n:
            return None
        start = entries[tag][2]
        values = []
        for i in range(n):
            num, den = struct.unpack_from(self.order + "II", self.data, start + 8 * i)
            if den == 0:
                return None
            values.append(num / den)
        return values


def decode_text(value: bytes) -> str:
    """Text as cameras and IPTC write it: UTF-8 when it is, else Latin-1; control
    characters (a NUL that PostgreSQL refuses, escapes) dropped."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")
    return "".join(ch for ch in text if ch >= " " or ch == "\t")


def read_exif(block) -> dict:
    """{"dates": [...], "make", "model", "gps": (lat_ref, lat, lon_ref, lon) or None}
    from a TIFF structure; {} when it is none."""
    try:
        tiff = Tiff(block)
    except (ValueError, struct.error):
        return {}
    ifd0 = tiff.entries(tiff.ifd0)
    exif = tiff.entries(tiff.pointer(ifd0, EXIF_IFD))
    gps = tiff.entries(tiff.pointer(ifd0, GPS_IFD))
    dates = [tiff.text(exif, DATE_ORIGINAL), tiff.text(exif, DATE_DIGITIZED), tiff.text(ifd0, DATE_TIME)]
    return {"dates": [d for d in dates if d], "make": tiff.text(ifd0, MAKE),
            "model": tiff.text(ifd0, MODEL),
            "gps": (tiff.text(gps, GPS_LAT_REF), tiff.rationals(gps, GPS_LAT, 3),
                    tiff.text(gps, GPS_LON_REF), tiff.rationals(gps, GPS_LON, 3))}


def tiff_file_blocks(data, most: int) -> tuple[bytes | None, bytes | None, list[str]]:
    """(XMP, IPTC, what was too large) kept in a TIFF file's first directory."""
    try:
        tiff = Tiff(data)
        ifd0 = tiff.entries(tiff.ifd0)
    except (ValueError, struct.error):
        return None, None, []
    refused = [name for tag, name in ((XMP_TAG, "XMP"), (IPTC_TAG, "IPTC"), (PHOTOSHOP_TAG, "IPTC"))
               if tag in ifd0 and tiff.raw(ifd0, tag, most) is None]
    xmp = tiff.raw(ifd0, XMP_TAG, most)
    iptc = tiff.raw(ifd0, IPTC_TAG, most)
    if iptc is None and (irb := tiff.raw(ifd0, PHOTOSHOP_TAG, most)) is not None:
        iptc = iptc_from_photoshop(bytes(irb))
    return (bytes(xmp) if xmp is not None else None), (bytes(iptc) if iptc is not None else None), refused


def iptc_from_photoshop(irb: bytes) -> bytes | None:
    """The IPTC-IIM resource (0x0404) of Photoshop image resource blocks (8BIM ...)."""
    at = 0
    while at + 12 <= len(irb) and irb[at:at + 4] == b"8BIM":
        resource = struct.unpack_from(">H", irb, at + 4)[0]
        name_len = irb[at + 6]
        at += 6 + (name_len + 2 if name_len % 2 == 0 else name_len + 1)  # a padded Pascal string
        if at + 4 > len(irb):
            return None
        size = struct.unpack_from(">I", irb, at)[0]
        at += 4
        if resource == 0x0404:
            return irb[at:at + size]
        at += size + (size & 1)
    return None


def iptc_keywords(iim: bytes) -> list[str]:
    """The keywords (dataset 2:25) of IPTC-IIM datasets, in order."""
    words, at = [], 0
    while at + 5 <= len(iim) and iim[at] == 0x1C:
        record, dataset, size = iim[at + 1], iim[at + 2], struct.unpack_from(">H", iim, at + 3)[0]
        at += 5
        if size & 0x8000:  # an extended dataset: the length is in the next (size & 0x7fff) bytes
            n = size & 0x7FFF
            if n > 4 or at + n > len(iim):
                break
            size, at = int.from_bytes(iim[at:at + n], "big"), at + n
        if (record, dataset) == (2, 25):
            words.append(decode_text(iim[at:at + size]))
        at += size
    return words


__all__ = ["Tiff", "decode_text", "iptc_from_photoshop", "iptc_keywords", "read_exif", "tiff_file_blocks"]
