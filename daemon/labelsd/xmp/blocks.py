"""Where a photo keeps its metadata: the EXIF, IPTC and XMP blocks of a JPEG,
PNG, WebP, TIFF, HEIF or AVIF, found by walking the file's own structure
(segments, chunks, the first TIFF directory, ISO boxes: bmff.py) in the bytes
the reader already holds.

Nothing larger than MAX_BLOCK_BYTES is taken: a block over it is left out and
named in `Blocks.refused` (the photo is labelled without it). Compressed PNG
text is inflated only up to the cap, so a zlib bomb costs 1 MiB; the walk
itself stops after MAX_PARTS segments or chunks, so a file of a million empty
chunks costs a bounded loop. GIF and BMP carry nothing labelsd reads.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from labelsd.xmp import bmff
from labelsd.xmp.tiff import iptc_from_photoshop, tiff_file_blocks

# One cap for each block, EXIF, IPTC or XMP (and a sidecar: exiv.MAX_XMP_BYTES is
# the same 1 MiB). A JPEG holds each in one 64 KiB segment by the format's own rule;
# a camera's EXIF is 10-60 KiB, a photo manager's XMP a few KiB. 16 times the JPEG
# limit leaves room for the formats that set none (PNG, TIFF, WebP, HEIF).
MAX_BLOCK_BYTES = 1 << 20
MAX_PARTS = 200_000  # segments or chunks walked (a 256 MiB PNG of 8 KiB chunks has 32,768)

_XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
_PHOTOSHOP = b"Photoshop 3.0\x00"
_RAW_PROFILE = re.compile(rb"\s*\S+\s+(\d+)\s+(.*)", re.S)  # ImageMagick's "Raw profile type ..."


@dataclass
class Blocks:
    exif: object = None  # a TIFF structure (bytes or a memoryview of the photo's bytes)
    iptc: bytes | None = None  # IPTC-IIM datasets
    xmp: bytes | None = None  # an XMP packet
    refused: list[str] = field(default_factory=list)  # blocks left out, in words
    decided: set = field(default_factory=set)  # kinds found or refused: later ones are skipped

    def take(self, kind: str, value) -> None:
        """Keep the first block of each kind, if it is not over the cap (checked
        before anything is copied); later blocks of a kind are not looked at."""
        if value is None or kind in self.decided:
            return
        self.decided.add(kind)
        if len(value) > MAX_BLOCK_BYTES:
            self.refuse(kind, len(value))
        else:
            setattr(self, kind, value if kind == "exif" else bytes(value))

    def refuse(self, kind: str, size: int | None = None) -> None:
        what = kind.upper() + (f" ({_size(size)})" if size is not None else "")
        self.refused.append(f"its {what} is over the {_size(MAX_BLOCK_BYTES)} cap")


def find_blocks(data: bytes) -> Blocks:
    """The metadata blocks of a photo's bytes (empty Blocks for another format)."""
    view = memoryview(data)
    found = Blocks()
    try:
        if data[:3] == b"\xff\xd8\xff":
            _jpeg(view, found)
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            _png(view, found)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            _webp(view, found)
        elif data[:4] in (b"II*\x00", b"MM\x00*"):
            found.exif = view  # the file is a TIFF structure: read entry by entry, never copied
            xmp, iptc, refused = tiff_file_blocks(view, MAX_BLOCK_BYTES)
            found.xmp, found.iptc = xmp, iptc
            for kind in refused:
                found.refuse(kind.lower())
        elif data[4:8] == b"ftyp":
            exif, xmp, refused = bmff.metadata_items(view, MAX_BLOCK_BYTES)
            found.take("exif", exif)
            found.take("xmp", xmp)
            for kind in refused:
                found.refuse(kind.lower())
    except (struct.error, IndexError, ValueError):
        pass  # a broken structure: what was found before the break is kept
    return found


def _jpeg(data: memoryview, found: Blocks) -> None:
    at, photoshop, parts = 2, [], 0
    while at + 4 <= len(data) and parts < MAX_PARTS:
        parts += 1
        if data[at] != 0xFF:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no metadata after
            break
        size = struct.unpack_from(">H", data, at + 2)[0]
        segment = data[at + 4:at + 2 + size]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            found.take("exif", segment[6:])
        elif marker == 0xE1 and segment[:len(_XMP_JPEG)] == _XMP_JPEG:
            found.take("xmp", segment[len(_XMP_JPEG):])
        elif marker == 0xED and segment[:len(_PHOTOSHOP)] == _PHOTOSHOP:
            photoshop.append(segment[len(_PHOTOSHOP):])  # one resource may span segments
        at += 2 + size
    if photoshop:
        total = sum(len(part) for part in photoshop)
        if total > MAX_BLOCK_BYTES:
            found.refuse("iptc", total)
        else:
            found.take("iptc", iptc_from_photoshop(b"".join(photoshop)))


def _chunks(data: memoryview, at: int, *, png: bool) -> Iterator[tuple[bytes, memoryview]]:
    """(type, body) of the chunks from `at` on, at most MAX_PARTS of them: PNG's
    (big-endian size, type, body, CRC) or RIFF's (type, little-endian size, body,
    a pad byte after an odd size)."""
    parts = 0
    while at + 8 <= len(data) and parts < MAX_PARTS:
        parts += 1
        if png:
            size, kind = struct.unpack_from(">I4s", data, at)
            after = 4  # the CRC
        else:
            kind, size = struct.unpack_from("<4sI", data, at)
            after = size & 1
        yield kind, data[at + 8:at + 8 + size]
        at += 8 + size + after


def _png(data: memoryview, found: Blocks) -> None:
    for kind, body in _chunks(data, 8, png=True):
        if kind == b"eXIf":
            found.take("exif", body)
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            _png_text(kind, body, found)
        elif kind == b"IEND":
            break


def _png_text(kind: bytes, body: memoryview, found: Blocks) -> None:
    keyword = bytes(body[:80]).partition(b"\x00")[0]
    if keyword != b"XML:com.adobe.xmp" and not keyword.startswith(b"Raw profile type "):
        return
    what = _profile_kind(keyword)
    # A profile labelsd does not read (ICC, 8BIM) is never inflated; nor, since the first
    # block of a kind counts, are thousands more of a kind already found or refused.
    if what is None or what in found.decided:
        return
    start = len(keyword) + 1
    compressed = kind == b"zTXt"
    if kind == b"iTXt":  # flag, method, language\0, translated keyword\0, text
        compressed = body[start] == 1
        head = bytes(body[start + 2:start + 2 + 4096])
        language_end = head.find(b"\x00")
        translated_end = head.find(b"\x00", language_end + 1)
        if language_end < 0 or translated_end < 0:
            return
        start += 2 + translated_end + 1
    elif kind == b"zTXt":
        start += 1  # the compression method
    text = _inflate(body[start:]) if compressed else body[start:]
    if text is None or len(text) > MAX_BLOCK_BYTES * 2 + 64:  # a raw profile is hex: two digits a byte
        found.refuse(what)
        found.decided.add(what)
        return
    if keyword == b"XML:com.adobe.xmp":
        found.take("xmp", text)
        return
    payload = _raw_profile(bytes(text))
    if payload is None:
        return
    if what == "exif":
        found.take("exif", payload[6:] if payload[:6] == b"Exif\x00\x00" else payload)
    elif what == "iptc":
        payload = payload[len(_PHOTOSHOP):] if payload.startswith(_PHOTOSHOP) else payload
        found.take("iptc", iptc_from_photoshop(payload) if payload[:4] == b"8BIM" else payload)
    else:
        found.take("xmp", payload)


def _profile_kind(keyword: bytes) -> str | None:
    name = keyword.removeprefix(b"Raw profile type ").lower()
    return {b"xml:com.adobe.xmp": "xmp", b"exif": "exif", b"app1": "exif", b"iptc": "iptc",
            b"xmp": "xmp"}.get(name)


def _inflate(compressed: memoryview) -> bytes | None:
    """zlib data inflated up to the cap; None when it inflates past it."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(compressed, MAX_BLOCK_BYTES * 2 + 65)
    except zlib.error:
        return b""
    return None if inflater.unconsumed_tail else out


def _raw_profile(text: bytes) -> bytes | None:
    """ImageMagick's "\\nexif\\n   1234\\n<hex digits>" text, decoded."""
    found = _RAW_PROFILE.match(text)
    if found is None:
        return None
    size = int(found.group(1))
    digits = re.sub(rb"\s+", b"", found.group(2))[:2 * size]
    try:
        return bytes.fromhex(digits.decode("ascii"))
    except ValueError:
        return None


def _webp(data: memoryview, found: Blocks) -> None:
    for kind, body in _chunks(data, 12, png=False):
        if kind == b"EXIF":
            found.take("exif", body[6:] if body[:6] == b"Exif\x00\x00" else body)
        elif kind == b"XMP ":
            found.take("xmp", body)


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / (1 << 10):.0f} KiB"


__all__ = ["MAX_BLOCK_BYTES", "Blocks", "find_blocks"]
