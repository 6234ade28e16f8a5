"""What a photo's metadata can hold against labelsd (issue 31): a 2,000,000-keyword
XMP packet, a zlib bomb in PNG text, an IPTC bomb over many segments, EXIF
directories that loop or overlap, a maker note exiv2 would parse, XMP with entity
declarations (billion laughs), deep nesting, thousands of namespaces. Reading
the metadata stays bounded in memory and time, never raises, and keeps what it
can; at most MAX_KEYWORDS keywords become tags and the rest are counted in one
log line. Memory is measured in a child process (ru_maxrss), which also runs
under an address-space limit so that the code before the fix fails the test
instead of the machine."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import time
import zlib

import pytest

import metagen
from imagegen import make_image
from labelsd.records import PhotoMeta
from labelsd.xmp import exiv
from labelsd.xmp.blocks import MAX_BLOCK_BYTES, find_blocks
from labelsd.xmp.metadata import MAX_KEYWORDS, read_photo_meta
from test_metadata import make_photo

CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from labelsd.xmp import exiv
from labelsd.xmp.metadata import read_photo_meta
exiv.load()
read_photo_meta(open(sys.argv[2], 'rb').read(), sys.argv[2])  # warm: every import and table
data = open(sys.argv[1], 'rb').read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
meta = read_photo_meta(data, sys.argv[1])
took = time.monotonic() - start
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"grew_mb": grew, "seconds": took, "keywords": len(meta.keywords) if meta else 0,
                  "camera": meta.camera if meta else None}))
"""

BOUND_MB = 64  # what reading one photo's metadata may add to the peak (XMP at the cap: ~36 MB)


def measured(photo, tmp_path) -> dict:
    """read_photo_meta(photo) in a child: how much its peak memory grew, how long it took."""
    warm = make_photo(tmp_path / "warm.jpg", iptc=("warm",), xmp_subject=("up",))
    run = subprocess.run([sys.executable, "-c", CHILD, str(photo), str(warm)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


# ---- bounded memory ------------------------------------------------------------------------


def test_two_million_keywords_cost_bounded_memory_and_time(tmp_path):
    """The issue's 51 MB PNG: exiv2 took about 2 GB to parse it."""
    photo = metagen.png_with_xmp(tmp_path / "bomb.png", metagen.keyword_bomb_xmp(2_000_000))
    assert photo.stat().st_size > 50_000_000
    got = measured(photo, tmp_path)
    assert got["grew_mb"] < BOUND_MB and got["seconds"] < 10, got
    assert got["keywords"] == 0  # its XMP is over the cap: not read


def test_a_compressed_keyword_bomb_is_inflated_only_to_the_cap(tmp_path):
    photo = metagen.png_with_xmp(tmp_path / "zbomb.png", metagen.keyword_bomb_xmp(2_000_000),
                                 compressed=True)
    assert photo.stat().st_size < 10_000_000  # 51 MB of XMP, zlib'd
    got = measured(photo, tmp_path)
    assert got["grew_mb"] < BOUND_MB and got["seconds"] < 10, got


def test_exif_values_that_overlap_cost_nothing(tmp_path):
    """250 entries pointing at the same 1 MB inside a PNG's EXIF chunk (exiv2 copied
    each: 500 MB)."""
    photo = metagen.png_with_chunks(tmp_path / "overlap.png", [(b"eXIf", metagen.overlapping_exif())])
    got = measured(photo, tmp_path)
    assert got["grew_mb"] < BOUND_MB and got["seconds"] < 5, got


def test_an_xmp_packet_at_the_cap_is_read_within_the_bound(tmp_path):
    """The worst shape under the cap: one-letter keywords, as many as 1 MiB holds."""
    words = [chr(0x4E00 + i % 20000) for i in range(50_000)]
    xmp = metagen.xmp_packet(words)
    assert len(xmp) < exiv.MAX_XMP_BYTES
    photo = metagen.png_with_xmp(tmp_path / "full.png", xmp)
    got = measured(photo, tmp_path)
    assert got["grew_mb"] < BOUND_MB, got
    assert got["keywords"] == MAX_KEYWORDS


# ---- caps and what happens to the rest ---------------------------------------------------------


def test_keywords_over_the_cap_are_counted_and_logged_once(tmp_path, caplog):
    xmp_words = [f"xmp word {i}" for i in range(200)]
    iptc_words = [f"iptc word {i}" for i in range(150)] + ["x" * 300]
    photo = metagen.jpeg_with_segments(tmp_path / "many.jpg", [
        metagen.xmp_segment(metagen.xmp_packet(xmp_words)),
        *metagen.photoshop_segments(metagen.iim(iptc_words))])
    with caplog.at_level(logging.INFO, logger="labelsd.xmp.metadata"):
        meta = read_photo_meta(photo.read_bytes(), str(photo))
    assert meta.keywords == (*xmp_words, *iptc_words[:MAX_KEYWORDS - 200])
    lines = [r.getMessage() for r in caplog.records if "many.jpg" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "94 more keyword(s) than the 256" in lines[0] and "1 keyword(s) longer than 200" in lines[0]


def test_a_block_over_the_cap_is_left_out_and_the_rest_is_read(tmp_path, caplog):
    iptc = metagen.iim([f"k{i:06d}" for i in range(100_000)])  # 1.1 MB over 18 segments
    assert len(iptc) > MAX_BLOCK_BYTES
    photo = make_photo(tmp_path / "base.jpg", xmp_subject=("sunset",))
    (tmp_path / "big.jpg").write_bytes(metagen.add_jpeg_segments(photo.read_bytes(),
                                                                 metagen.photoshop_segments(iptc)))
    with caplog.at_level(logging.INFO, logger="labelsd.xmp.metadata"):
        meta = read_photo_meta((tmp_path / "big.jpg").read_bytes(), str(tmp_path / "big.jpg"))
    assert meta.keywords == ("sunset",) and meta.camera == "Apple iPhone 13"
    assert any("its IPTC (1.1 MiB) is over the 1.0 MiB cap" in r.getMessage() for r in caplog.records)


# ---- structure attacks --------------------------------------------------------------------------


def test_exif_directories_that_loop_are_read_once(tmp_path):
    photo = metagen.jpeg_with_segments(tmp_path / "loop.jpg", [metagen.exif_segment(metagen.looping_exif())])
    meta = read_photo_meta(photo.read_bytes(), str(photo))
    assert meta == PhotoMeta(camera="Canon EOS R5")  # the maker note is never parsed


def test_a_broken_exif_block_leaves_the_xmp_keywords(tmp_path):
    photo = metagen.jpeg_with_segments(tmp_path / "broken.jpg", [
        metagen.exif_segment(b"XX*\x00garbage" * 50), metagen.xmp_segment(metagen.xmp_packet(["kept"]))])
    assert read_photo_meta(photo.read_bytes(), str(photo)) == PhotoMeta(keywords=("kept",))


@pytest.mark.parametrize("packet", [
    metagen.xmp_packet(["&lol9;", "laugh"], doctype=metagen.billion_laughs()),
    metagen.xmp_packet(["&ext;"], doctype='<!DOCTYPE x:xmpmeta [<!ENTITY ext SYSTEM "file:///etc/passwd">]>'),
], ids=["billion laughs", "external entity"])
def test_entity_declarations_in_xmp_are_refused(tmp_path, packet):
    photo = metagen.jpeg_with_segments(tmp_path / "laughs.jpg", [
        metagen.xmp_segment(packet), *metagen.photoshop_segments(metagen.iim(["iptc kept"]))])
    got = measured(photo, tmp_path)
    assert got["grew_mb"] < BOUND_MB and got["seconds"] < 5, got
    meta = read_photo_meta(photo.read_bytes(), str(photo))
    assert meta.keywords == ("iptc kept",)
    assert not any("lol" in k or "root:" in k for k in meta.keywords)


def test_deep_nesting_in_xmp_neither_crashes_nor_blows_up(tmp_path):
    photo = metagen.png_with_xmp(tmp_path / "deep.png", metagen.deep_xmp(100_000))
    got = measured(photo, tmp_path)  # a stack overflow would kill the child: returncode != 0
    assert got["grew_mb"] < BOUND_MB and got["seconds"] < 10, got


def test_namespaces_are_bounded_and_forgotten(tmp_path):
    exiv2 = exiv.load()
    before = len(exiv2.XmpProperties.registeredNamespaces())
    for n in range(5):  # 90 namespaces each, none seen before: all registered while read
        photo = metagen.png_with_xmp(tmp_path / f"ns{n}.png", metagen.xmp_packet(
            [f"word{n}"], body="".join(f'<m{n}x{i}:p xmlns:m{n}x{i}="urn:t{n}:{i}/">1</m{n}x{i}:p>'
                                       for i in range(90))))
        assert read_photo_meta(photo.read_bytes()).keywords == (f"word{n}",)
    assert len(exiv2.XmpProperties.registeredNamespaces()) == before
    crowded = metagen.png_with_xmp(tmp_path / "crowded.png", metagen.xmp_packet(["w"], namespaces=500))
    assert read_photo_meta(crowded.read_bytes()) is None  # more than MAX_XMP_NAMESPACES: not read


def test_a_sidecar_that_changes_while_read_is_read_whole_or_not_at_all(tmp_path):
    """A writer rewriting the sidecar (shorter, longer, over the cap) while the photo
    is read again and again: every read keeps the photo's own keyword, never hangs
    or raises, and imports the sidecar's keyword only from a whole packet."""
    import threading

    photo = make_photo(tmp_path / "a.jpg", iptc=("beach",))
    sidecar = tmp_path / "a.jpg.xmp"
    versions = [metagen.xmp_packet(["one"]), metagen.xmp_packet(["two"] + ["pad"] * 2000),
                metagen.xmp_packet(["huge"]) + b" " * (exiv.MAX_XMP_BYTES + 10), b"<x:xmpmeta"]
    stop = threading.Event()

    def rewrite():
        n = 0
        while not stop.is_set():
            with open(sidecar, "r+b" if sidecar.exists() else "wb") as fh:
                fh.truncate(0)
                fh.write(versions[n % len(versions)])
            n += 1

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    data = photo.read_bytes()
    try:
        seen = {read_photo_meta(data, str(photo)).keywords for _ in range(200)}
    finally:
        stop.set()
        writer.join(5)
    assert all(words[0] == "beach" for words in seen)
    # "huge": its packet is whole in its first bytes (the padding follows it), so a read
    # that met the file half rewritten, under the cap, may import it; never a torn word
    assert {w for words in seen for w in words} <= {"beach", "one", "two", "pad", "huge"}


# ---- every format still reads what it holds ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "HEIF", "AVIF"])
def test_every_format_gives_its_date_camera_and_position(tmp_path, fmt):
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    exif.get_ifd(0x8769)[0x9003] = "2024:07:14 15:30:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "S", (22.0, 54.0, 30.0), "W", (43.0, 10.0, 30.0)
    suffix = {"JPEG": "jpg", "HEIF": "heic"}.get(fmt, fmt.lower())
    xmp = metagen.xmp_packet(["holiday"])
    extra = {"xmp": xmp} if fmt in ("JPEG", "WEBP", "HEIF", "AVIF") else {}
    if fmt == "TIFF":
        exif[700] = xmp  # XMLPacket, in the TIFF file's own first directory
    photo = make_image(tmp_path / f"photo.{suffix}", fmt=fmt, exif=exif.tobytes(), **extra)
    if fmt == "PNG":
        itxt = (b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
        photo.write_bytes(metagen.add_png_chunks(photo.read_bytes(), [itxt]))
    meta = read_photo_meta(photo.read_bytes(), str(photo))
    assert meta == PhotoMeta(taken_at="2024-07-14T15:30:00", camera="Canon EOS R5",
                             gps_lat=-22.9083333, gps_lon=-43.175, keywords=("holiday",)), fmt
    assert find_blocks(photo.read_bytes()).refused == []


def test_thousands_of_zlib_bombs_are_not_each_inflated(tmp_path):
    bomb = zlib.compress(b"\n" + b"exif\n" + b"   9999999\n" + b"0" * 3_000_000, 9)  # 3 MB from 3 KB
    chunk = (b"zTXt", b"Raw profile type exif\x00\x00" + bomb)
    photo = metagen.png_with_chunks(tmp_path / "zbombs.png", [chunk] * 3000)
    began = time.monotonic()
    blocks = find_blocks(photo.read_bytes())
    assert time.monotonic() - began < 5
    assert blocks.exif is None and len(blocks.refused) == 1


def test_a_raw_profile_labelsd_does_not_read_is_never_inflated(tmp_path, monkeypatch):
    """ImageMagick's "Raw profile type icc" or "8bim": nothing labelsd reads, so not
    inflated (the code before inflated the first, up to 2 MiB, and noted it as refused)."""
    from labelsd.xmp import blocks

    inflated = []
    monkeypatch.setattr(blocks, "_inflate", lambda data: inflated.append(len(data)))
    bomb = zlib.compress(b"\nicc\n   9999999\n" + b"0" * 3_000_000, 9)
    photo = metagen.png_with_chunks(tmp_path / "icc.png", [
        (b"zTXt", b"Raw profile type icc\x00\x00" + bomb), (b"zTXt", b"Raw profile type 8bim\x00\x00" + bomb)])
    assert find_blocks(photo.read_bytes()).refused == [] and inflated == []


def test_a_heif_location_table_of_65535_by_65535_is_a_bounded_loop(tmp_path):
    from labelsd.xmp import bmff

    iinf = struct.pack(">I4s", 14, b"iinf") + b"\x00" * 6  # version 0, no entries
    # Offsets and lengths of 0 bytes: every extent takes no room, so 10,000 items of
    # 65,535 extents each fit in 80 KB (the loop, not the bytes, is the attack).
    iloc_body = bytes([1, 0, 0, 0, 0x00, 0x00]) + struct.pack(">H", 10_000) + (
        struct.pack(">HHHH", 1, 0, 0, 0xFFFF)) * 10_000
    iloc = struct.pack(">I4s", 8 + len(iloc_body), b"iloc") + iloc_body
    meta_body = b"\x00\x00\x00\x00" + iinf + iloc
    data = (struct.pack(">I4s4sI", 16, b"ftyp", b"heic", 0)
            + struct.pack(">I4s", 8 + len(meta_body), b"meta") + meta_body)
    began = time.monotonic()
    assert bmff.metadata_items(memoryview(data), MAX_BLOCK_BYTES) == (None, None, [])
    assert time.monotonic() - began < 2


def test_imagemagick_raw_profiles_in_png_text_are_read(tmp_path):
    """ImageMagick keeps EXIF and IPTC as hex in zTXt "Raw profile type ..." chunks."""
    exif = metagen.looping_exif()  # a make and a model, whatever its pointers do

    def raw_profile(name: str, payload: bytes) -> bytes:
        digits = payload.hex()
        lines = "\n".join(digits[i:i + 72] for i in range(0, len(digits), 72))
        return f"\n{name}\n{len(payload):8d}\n{lines}\n".encode()

    chunks = [(b"zTXt", b"Raw profile type exif\x00\x00" + zlib.compress(raw_profile("exif", b"Exif\x00\x00" + exif))),
              (b"tEXt", b"Raw profile type iptc\x00" + raw_profile("iptc", metagen.iim(["from iptc"])))]
    photo = metagen.png_with_chunks(tmp_path / "magick.png", chunks)
    assert read_photo_meta(photo.read_bytes(), str(photo)) == PhotoMeta(camera="Canon EOS R5",
                                                                         keywords=("from iptc",))
