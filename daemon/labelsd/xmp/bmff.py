"""The EXIF and XMP items of a HEIF or AVIF file (ISO base media file format):
the `meta` box names its items (`iinf`: an `Exif` item, a `mime` item of type
application/rdf+xml) and where their bytes lie (`iloc`: extents in the file or
in the `idat` box). Every count and length is checked against the bytes there
and the cap before anything is copied.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

MAX_BOXES = 10_000  # boxes walked at one level, items and extents read
XMP_MIME = b"application/rdf+xml"


def boxes(data: memoryview, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, where its body starts, where it ends) of the boxes in data[start:end]."""
    at, seen = start, 0
    while at + 8 <= end and seen < MAX_BOXES:
        seen += 1
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            return
        yield kind, at + header, at + size
        at += size


def metadata_items(data: memoryview, most: int) -> tuple[memoryview | None, bytes | None, list[str]]:
    """(the EXIF block as a TIFF structure, the XMP packet, kinds over `most`)."""
    meta = next(((s, e) for kind, s, e in boxes(data, 0, len(data)) if kind == b"meta"), None)
    if meta is None:
        return None, None, []
    start, end = meta[0] + 4, meta[1]  # a full box: version and flags first
    children = {kind: (s, e) for kind, s, e in boxes(data, start, end)}
    if b"iinf" not in children or b"iloc" not in children:
        return None, None, []
    wanted = _wanted_items(data, *children[b"iinf"])
    located = _locations(data, *children[b"iloc"], set(wanted))
    idat = children.get(b"idat", (0, 0))[0]
    found: dict[str, memoryview | bytes] = {}
    refused = []
    for item, kind in wanted.items():
        if kind in found or item not in located:
            continue
        method, extents = located[item]
        total = sum(length for _, length in extents)
        if total > most + 64:
            refused.append(kind)
            continue
        base = idat if method == 1 else 0
        parts = [data[base + offset:base + offset + length] for offset, length in extents]
        if any(len(p) != length for p, (_, length) in zip(parts, extents)):
            continue  # an extent past the end of the file
        found[kind] = parts[0] if len(parts) == 1 else memoryview(b"".join(parts))
    exif = found.get("EXIF")
    if exif is not None:  # a 4-byte offset to the TIFF header, then (often "Exif\0\0" and) the header
        skip = 4 + struct.unpack_from(">I", exif, 0)[0] if len(exif) >= 4 else len(exif)
        exif = exif[skip:]
    xmp = found.get("XMP")
    return exif, bytes(xmp) if xmp is not None else None, refused


def _wanted_items(data: memoryview, start: int, end: int) -> dict[int, str]:
    """{item id: "EXIF" or "XMP"} from the `iinf` box."""
    version = data[start]
    at = start + 4 + (2 if version == 0 else 4)
    wanted = {}
    for kind, s, _e in boxes(data, at, end):
        if kind != b"infe" or data[s] < 2:
            continue
        at = s + 4
        if data[s] == 2:
            item, at = struct.unpack_from(">H", data, at)[0], at + 2
        else:
            item, at = struct.unpack_from(">I", data, at)[0], at + 4
        item_type = bytes(data[at + 2:at + 6])
        if item_type == b"Exif":
            wanted[item] = "EXIF"
        elif item_type == b"mime":
            name_end = bytes(data[at + 6:_e]).find(b"\x00")
            content_type = bytes(data[at + 6 + name_end + 1:_e]).split(b"\x00", 1)[0]
            if name_end >= 0 and content_type == XMP_MIME:
                wanted[item] = "XMP"
    return wanted


def _locations(data: memoryview, start: int, end: int,
               wanted: set[int]) -> dict[int, tuple[int, list[tuple[int, int]]]]:
    """{item id: (construction method, [(offset, length), ...])} from the `iloc` box."""
    version = data[start]
    sizes, more = data[start + 4], data[start + 5]
    offset_size, length_size, base_size = sizes >> 4, sizes & 0xF, more >> 4
    index_size = more & 0xF if version in (1, 2) else 0
    at = start + 6
    count, at = (struct.unpack_from(">H", data, at)[0], at + 2) if version < 2 else \
        (struct.unpack_from(">I", data, at)[0], at + 4)
    located = {}
    budget = MAX_BOXES  # items and extents read in all: a count of 65,535 x 65,535 is a loop bound
    for _ in range(count):
        budget -= 1
        if budget < 0 or at > end:
            break
        item, at = _uint(data, at, 2 if version < 2 else 4)
        method = 0
        if version in (1, 2):
            method, at = _uint(data, at, 2)
            method &= 0xF
        at += 2  # data reference index
        base, at = _uint(data, at, base_size)
        extent_count, at = _uint(data, at, 2)
        extents = []
        for _ in range(extent_count):
            budget -= 1
            if budget < 0 or at > end:
                return located
            at += index_size
            offset, at = _uint(data, at, offset_size)
            length, at = _uint(data, at, length_size)
            extents.append((base + offset, length))
        if item in wanted:
            located[item] = (method, extents)
    return located


def _uint(data: memoryview, at: int, size: int) -> tuple[int, int]:
    if size == 0:
        return 0, at
    return int.from_bytes(data[at:at + size], "big"), at + size


__all__ = ["boxes", "metadata_items"]
