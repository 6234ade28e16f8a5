"""The exiv2 library, loaded once, and the few helpers labelsd needs over its API.

labelsd uses exiv2 for XMP only (the EXIF and IPTC fields it keeps are read by
tiff.py). exiv2's XMP toolkit must be initialised, and namespaces registered,
before any thread uses it; `load()` does both once, under a lock. Parsing XMP
registers the namespaces it meets in a process-wide table that exiv2 guards only
with a lock function python-exiv2 cannot pass, so every use of exiv2 holds `LOCK`
(in memory only, well under a millisecond a photo: file reads and writes happen
outside it), through `locked()`, which also forgets those namespaces afterwards.

What exiv2 is given is bounded first (`read_xmp`): at most MAX_XMP_BYTES, UTF-8,
at most MAX_XMP_NAMESPACES namespace declarations. exiv2's own toolkit refuses
DOCTYPE and entity declarations (billion laughs) and nesting deeper than it
handles (tests/test_hostile_metadata.py holds it to that).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager

log = logging.getLogger(__name__)

LABELSD_NS = "http://ns.labelsd.org/xmp/1.0/"  # labelsd:keywords, labelsd:suppressed

# The most bytes of XMP labelsd reads, embedded or in a sidecar (1 MiB). A photo's
# XMP is kilobytes: a JPEG holds it in one 64 KiB segment, Lightroom's and
# darktable's sidecars are a few KiB to tens of KiB. exiv2 builds its tree at
# about 35 bytes of memory per byte of XMP (measured: 1 MiB of one-letter
# keywords, 36 MB), so the cap is also what bounds parsing it.
MAX_XMP_BYTES = 1 << 20
# Namespace declarations in one packet: a photo manager's XMP declares 5 to 30.
# Each namespace exiv2 meets stays registered in its process-wide table, whose
# look-ups slow down as it grows (20,000 namespaces: 3 s a packet, measured);
# `locked()` unregisters them after each use, and this bounds one use.
MAX_XMP_NAMESPACES = 100


class XmpRefused(ValueError):
    """An XMP packet labelsd does not give exiv2 (too large, not UTF-8, too many
    namespaces); the message says which."""

LOCK = threading.Lock()  # held around every use of exiv2 (see the module docstring)
_load_lock = threading.Lock()
_exiv2 = None


def load():
    """The exiv2 module, initialised (lazily imported: the CLI's queries never need it)."""
    global _exiv2
    if _exiv2 is not None:
        return _exiv2
    with _load_lock:
        if _exiv2 is None:
            import exiv2

            exiv2.XmpParser.initialize()
            try:
                exiv2.XmpProperties.registerNs(LABELSD_NS, "labelsd")
            except exiv2.Exiv2Error:  # already registered under that prefix
                log.debug("labelsd XMP namespace already registered", exc_info=True)
            # exiv2 writes its complaints about odd photos straight to stderr, without
            # the photo's name; labelsd logs what matters itself (naming the photo).
            exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)
            _exiv2 = exiv2
    return _exiv2


@contextmanager
def locked():
    """Hold LOCK around a use of exiv2 (yields the module); afterwards the
    namespaces that use registered are forgotten (labelsd's own kept)."""
    exiv2 = load()
    with LOCK:
        try:
            yield exiv2
        finally:
            try:
                exiv2.XmpProperties.unregisterNs()  # every custom one, labelsd's too
                exiv2.XmpProperties.registerNs(LABELSD_NS, "labelsd")
            except exiv2.Exiv2Error:
                log.debug("re-registering the labelsd namespace", exc_info=True)


def read_xmp(packet: bytes):
    """The XmpData of an XMP packet (embedded or a sidecar's bytes); XmpRefused
    when it is not bounded as the module docstring says, exiv2.Exiv2Error when
    exiv2 cannot read it. Call it inside `locked()`."""
    packet = packet.lstrip(b" \t\r\n")  # exiv2 does not recognise XMP after white space
    if len(packet) > MAX_XMP_BYTES:
        raise XmpRefused(f"XMP of {len(packet) >> 10} KiB is over the {MAX_XMP_BYTES >> 20} MiB cap")
    if b"\x00" in packet:
        raise XmpRefused("XMP not in UTF-8 (labelsd reads UTF-8 XMP only)")
    if packet.count(b"xmlns") > MAX_XMP_NAMESPACES:
        raise XmpRefused(f"XMP declares more than {MAX_XMP_NAMESPACES} namespaces")
    if packet.startswith(b"<rdf:RDF"):  # a bare RDF packet, as some writers embed it
        packet = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + packet + b"</x:xmpmeta>"
    image = load().ImageFactory.open(packet)
    image.readMetadata()
    return image.xmpData()


def values(data, key: str) -> list[str]:
    """Every value of `key` in exiv2 metadata `data` (XmpData, IptcData or
    ExifData): the items of an XMP array, each repeated IPTC dataset, or one value."""
    exiv2 = load()
    make_key = {"Xmp": exiv2.XmpKey, "Iptc": exiv2.IptcKey, "Exif": exiv2.ExifKey}[key.split(".")[0]]
    if key.startswith("Iptc."):
        return [d.toString() for d in data if d.key() == key]
    found = data.findKey(make_key(key))
    if found == data.end():
        return []
    if found.typeName() in ("XmpBag", "XmpSeq"):
        return [found.toString(i) for i in range(found.count())]
    return [found.toString()]


def erase(xmp, key: str) -> None:
    """Remove `key` from XmpData (every item of an array)."""
    exiv2 = load()
    found = xmp.findKey(exiv2.XmpKey(key))
    while found != xmp.end():
        xmp.erase(found)
        found = xmp.findKey(exiv2.XmpKey(key))


def set_array(xmp, key: str, items: list[str], kind: str = "bag") -> None:
    """Replace `key` with an XMP bag (or seq) of `items`; no items removes it."""
    exiv2 = load()
    erase(xmp, key)
    if not items:
        return
    value = exiv2.XmpArrayValue(exiv2.TypeId.xmpSeq if kind == "seq" else exiv2.TypeId.xmpBag)
    for item in items:
        value.read(item)
    xmp.add(exiv2.XmpKey(key), value)


# What a sidecar with nothing in it holds: a whole packet (exiv2 writes only the
# opening `<?xpacket begin=...?>` for empty XmpData, which no program reads).
EMPTY_PACKET = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
                '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
                ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>\n'
                '</x:xmpmeta>\n<?xpacket end="w"?>').encode()


def to_sidecar_bytes(xmp) -> bytes:
    """XmpData as the bytes of an XMP sidecar file, serialised by exiv2's own
    sidecar writer, in memory (the caller writes the file)."""
    exiv2 = load()
    if xmp.count() == 0:
        return EMPTY_PACKET
    image = exiv2.ImageFactory.create(exiv2.ImageType.xmp)
    image.setXmpData(xmp)
    image.writeMetadata()
    return bytes(image.io().data())


def whole_packet(packet: bytes) -> bool:
    """An XMP packet that ends: its x:xmpmeta closed and its end marker there."""
    return b"</x:xmpmeta>" in packet and b"<?xpacket end=" in packet


__all__ = ["LABELSD_NS", "LOCK", "MAX_XMP_BYTES", "MAX_XMP_NAMESPACES", "XmpRefused", "erase", "load", "locked",
           "read_xmp", "set_array", "to_sidecar_bytes", "values", "whole_packet"]
