"""Write photos whose metadata is hostile (issue 31): keyword bombs in XMP and
IPTC, zlib bombs in PNG text, EXIF directories that loop or overlap, XMP with
entity declarations, deep nesting or thousands of namespaces. Every function
returns bytes or writes one file and returns its path; the pixels are a small
real image, so the photo itself decodes and is labelled."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

from PIL import Image

from imagegen import pattern

XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
XPACKET_END = '<?xpacket end="w"?>'
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


def xmp_packet(keywords=(), *, doctype: str = "", body: str = "", namespaces: int = 0) -> bytes:
    """An XMP packet with dc:subject `keywords`, and optionally a DOCTYPE, more
    elements inside the description, or `namespaces` properties each in a namespace
    of its own."""
    items = "".join(f"<rdf:li>{w}</rdf:li>" for w in keywords)
    subject = f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>" if keywords else ""
    extra = "".join(f'<n{i}:p xmlns:n{i}="urn:labelsd-test:{i}/">1</n{i}:p>' for i in range(namespaces))
    return (XPACKET_BEGIN + doctype + '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            f'<rdf:RDF xmlns:rdf="{RDF}"><rdf:Description rdf:about="" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/">'
            + subject + extra + body + "</rdf:Description></rdf:RDF></x:xmpmeta>" + XPACKET_END).encode()


def keyword_bomb_xmp(n: int) -> bytes:
    """dc:subject with `n` distinct keywords (2,000,000: about 51 MB)."""
    return xmp_packet([f"kw{i:07d}" for i in range(n)])


def whole_packet(data: bytes) -> bool:
    """A sidecar any program reads: its x:xmpmeta closed and its end marker there."""
    return b"</x:xmpmeta>" in data and b"<?xpacket end=" in data


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def add_png_chunks(png: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """`png` with chunks [(type, body)] put right after its IHDR."""
    at = 8 + 25  # after the signature and IHDR
    return png[:at] + b"".join(png_chunk(k, b) for k, b in chunks) + png[at:]


def png_with_chunks(path, chunks: list[tuple[bytes, bytes]], *, size=(64, 48), seed: int = 0) -> Path:
    """A real PNG with chunks [(type, body)] put before the pixels."""
    buf = BytesIO()
    Image.fromarray(pattern(size, seed)).save(buf, "PNG")
    Path(path).write_bytes(add_png_chunks(buf.getvalue(), chunks))
    return Path(path)


def png_with_xmp(path, xmp: bytes, *, compressed: bool = False, size=(64, 48), seed: int = 0) -> Path:
    """A real PNG whose XMP sits in an iTXt chunk before the pixels (compressed or not)."""
    text = zlib.compress(xmp, 9) if compressed else xmp
    itxt = b"XML:com.adobe.xmp\x00" + bytes([int(compressed), 0]) + b"\x00\x00" + text
    return png_with_chunks(path, [(b"iTXt", itxt)], size=size, seed=seed)


def jpeg_with_segments(path, segments: list[tuple[int, bytes]], *, size=(64, 48), seed: int = 0) -> Path:
    """A real JPEG with APPn segments [(marker, payload)] put right after SOI."""
    buf = BytesIO()
    Image.fromarray(pattern(size, seed)).save(buf, "JPEG")
    Path(path).write_bytes(add_jpeg_segments(buf.getvalue(), segments))
    return Path(path)


def add_jpeg_segments(jpeg: bytes, segments: list[tuple[int, bytes]]) -> bytes:
    """`jpeg` with APPn segments [(marker, payload)] put right after its SOI."""
    head = b"".join(b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body
                    for marker, body in segments)
    return jpeg[:2] + head + jpeg[2:]


def xmp_segment(xmp: bytes) -> tuple[int, bytes]:
    return 0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp


def exif_segment(tiff: bytes) -> tuple[int, bytes]:
    return 0xE1, b"Exif\x00\x00" + tiff


def iim(keywords) -> bytes:
    """IPTC-IIM datasets: UTF-8 declared, then one 2:25 keyword each."""
    out = b"\x1c\x01\x5a\x00\x03\x1b%G"
    for word in keywords:
        data = word.encode()
        out += b"\x1c\x02\x19" + struct.pack(">H", len(data)) + data
    return out


def photoshop_segments(iptc: bytes) -> list[tuple[int, bytes]]:
    """The IPTC resource in Photoshop's APP13, split over as many segments as it needs."""
    irb = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc + (b"\x00" if len(iptc) % 2 else b"")
    step = 65000
    return [(0xED, b"Photoshop 3.0\x00" + irb[at:at + step]) for at in range(0, len(irb), step)]


def ifd(entries: list[tuple[int, int, int, bytes | int]], next_ifd: int = 0) -> bytes:
    """A little-endian TIFF directory: [(tag, type, count, inline bytes or offset)]."""
    out = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        raw = value.ljust(4, b"\x00") if isinstance(value, bytes) else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + raw
    return out + struct.pack("<I", next_ifd)


def looping_exif() -> bytes:
    """IFD0 whose Exif and GPS pointers and next-IFD all point back at IFD0, with a
    make and model; a TIFF structure as it sits in an EXIF block."""
    make, model = b"Canon\x00", b"Canon EOS R5\x00"
    n = 5
    data_at = 8 + 2 + 12 * n + 4
    entries = [(0x010F, 2, len(make), data_at), (0x0110, 2, len(model), data_at + len(make)),
               (0x8769, 4, 1, 8), (0x8825, 4, 1, 8), (0x927C, 7, 4, b"\xff\xff\xff\xff")]
    return b"II*\x00" + struct.pack("<I", 8) + ifd(entries, next_ifd=8) + make + model


def overlapping_exif(entries: int = 250, value_size: int = 1_000_000) -> bytes:
    """An EXIF block (under the 1 MiB cap) whose `entries` values all point at the
    same `value_size` bytes: exiv2 copied every one (250 x 1 MB: 500 MB, measured)."""
    data_at = 8 + 2 + 12 * entries + 4
    body = [(0xC000 + i % 0x3000, 7, value_size, data_at) for i in range(entries)]
    return b"II*\x00" + struct.pack("<I", 8) + ifd(body) + b"\x00" * value_size


def billion_laughs() -> str:
    """A DOCTYPE whose entity expands to 10**9 'lol's."""
    ents = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">' for i in range(1, 10))
    return f"<!DOCTYPE x:xmpmeta [{ents}]>"


def deep_xmp(depth: int) -> bytes:
    return xmp_packet(("deep",), body='<d:x xmlns:d="urn:deep/">' + "<d:x>" * depth + "1"
                      + "</d:x>" * depth + "</d:x>")
