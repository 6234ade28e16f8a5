"""The vector file: one embedding space's stored vectors as fixed-size records a
scan reads straight from the page cache (memory-mapped), with no database round
trip per row.

Layout: a 4096-byte header, then records of RECORD (the int8 code, its inverse
norm, the row's id in the database, the content's SHA-256 as 32 bytes), in the
order they were added. The header has two slots, each with its own CRC-32 and a
generation; a writer updates the older slot, so a header torn by a crash leaves
the other one whole, and a reader takes the valid slot of the highest generation.
A slot names the embedding space (its id and the random token the database gave
it: a file made from another database, a restored backup's older file included,
never matches) and how many records are valid (`count`) up to which database id
(`max_id`). Records past `count` are a crashed append's and are ignored.

Appends happen under an exclusive `flock` on the file: the records first, then
fdatasync, then the header, so what a header counts is on disk before it is
counted. A rebuild writes a new file beside it and renames it over, atomically;
a reader that mapped the old one keeps reading it whole. The file is a cache:
`library.load` checks it against the database each time and never trusts it more
than that.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from labelsd.paths import shown
from labelsd.vectors.codec import DIM

log = logging.getLogger(__name__)

# (the SHA-256 as 32 unsigned bytes, not numpy's "S32", which drops trailing zero bytes)
RECORD = np.dtype([("code", "i1", (DIM,)), ("inv_norm", "<f4"), ("id", "<i8"), ("sha", "u1", (32,))])
HEADER_BYTES = 4096
MAGIC = b"LBLVEC\x00\x01"
VERSION = 1
_SLOTS = (0, 2048)
_SLOT = struct.Struct("<8sIIIq32sqqQ")  # magic, version, record size, dim, space, token, count, max_id, generation
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Header:
    space: int
    token: str
    count: int = 0
    max_id: int = 0
    generation: int = 0

    def pack(self) -> bytes:
        body = _SLOT.pack(MAGIC, VERSION, RECORD.itemsize, DIM, self.space,
                          self.token.encode("ascii")[:32].ljust(32, b"\0"), self.count,
                          self.max_id, self.generation)
        return body + _CRC.pack(zlib.crc32(body))


def _unpack(slot: bytes) -> Header | None:
    body, crc = slot[:_SLOT.size], slot[_SLOT.size:_SLOT.size + _CRC.size]
    if len(crc) < _CRC.size or _CRC.unpack(crc)[0] != zlib.crc32(body):
        return None
    magic, version, record, dim, space, token, count, max_id, generation = _SLOT.unpack(body)
    if (magic, version, record, dim) != (MAGIC, VERSION, RECORD.itemsize, DIM) or count < 0:
        return None
    return Header(space, token.rstrip(b"\0").decode("ascii", "replace"), count, max_id, generation)


def read_header(fd: int) -> Header | None:
    """The valid header slot of the highest generation, or None (not a vector file)."""
    head = os.pread(fd, HEADER_BYTES, 0)
    found = [h for h in (_unpack(head[o:o + 2048]) for o in _SLOTS) if h is not None]
    return max(found, key=lambda h: h.generation) if found else None


class MappedFile:
    """A vector file mapped read-only: `records` are its `header.count` valid records."""

    def __init__(self, path: Path, header: Header, mapping: mmap.mmap | None):
        self.path = path
        self.header = header
        self._mapping = mapping
        self.records = (np.frombuffer(mapping, RECORD, header.count, HEADER_BYTES)
                        if mapping is not None and header.count else np.empty(0, RECORD))


def open_file(path: Path, space: int, token: str) -> MappedFile | None:
    """The file at `path` mapped, when it is a whole vector file of this space made
    from this database; None otherwise (missing, damaged, another space's)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # missing, or a symlink put in its place: rebuilt (the link replaced, not followed)
        return None
    try:
        header = read_header(fd)
        if header is None or (header.space, header.token) != (space, token):
            return None
        need = HEADER_BYTES + header.count * RECORD.itemsize
        if os.fstat(fd).st_size < need:
            log.info("vector file %s is shorter than its header says: rebuilt", shown(path))
            return None
        # MAP_POPULATE: the page tables filled in one go, not a fault per 4 KiB page in the scan
        # (1M rows, median of 8 on a busy 2-core EPYC: 0.13 s against 0.15 s to map and scan)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapping = mmap.mmap(fd, need, flags, mmap.PROT_READ) if header.count else None
        mapped = MappedFile(path, header, mapping)
        if header.count and int(mapped.records["id"][-1]) <= 0:  # counted, never written
            log.info("vector file %s does not end where its header says: rebuilt", shown(path))
            return None
        return mapped
    except (OSError, ValueError) as err:
        log.debug("cannot read the vector file %s: %s", shown(path), err)
        return None
    finally:
        os.close(fd)


def write_file(path: Path, header: Header, parts: Iterable[np.ndarray], mode: int) -> Header:
    """Write a whole new file at `path` from `parts` (an iterable: a rebuild streams
    them from the database), beside it first, then renamed over it. Its header."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # A new file of its own: in a folder its group may write (the system service's), a
    # name prepared in advance (a link to the database, say) is removed, never followed.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        count = max_id = 0
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(bytes(HEADER_BYTES))
            for part in parts:
                out.write(np.ascontiguousarray(part, RECORD).tobytes())
                count += len(part)
                if len(part):
                    max_id = max(max_id, int(part["id"].max()))
        header = replace(header, count=count, max_id=max_id, generation=1)
        os.pwrite(fd, _header_block(header), 0)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
        return header
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def _header_block(header: Header) -> bytes:
    block = bytearray(HEADER_BYTES)
    packed = header.pack()
    for offset in _SLOTS:
        block[offset:offset + len(packed)] = packed
    return bytes(block)


def append(path: Path, expected: Header, records: np.ndarray) -> bool:
    """Add `records` after the `expected.count` the caller has. False when the file
    is no longer the one the caller read (replaced, or appended to meanwhile)."""
    if not len(records):
        return True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        st, now_at_path = os.fstat(fd), os.stat(path)
        if (st.st_dev, st.st_ino) != (now_at_path.st_dev, now_at_path.st_ino):
            return False  # renamed over since it was opened: the new one is someone's rebuild
        now = read_header(fd)
        if now != expected:
            return False
        data = np.ascontiguousarray(records, RECORD).tobytes()
        os.pwrite(fd, data, HEADER_BYTES + now.count * RECORD.itemsize)
        os.fdatasync(fd)  # the records are on disk before the header counts them
        new = replace(now, count=now.count + len(records), generation=now.generation + 1,
                      max_id=max(now.max_id, int(records["id"].max())))
        os.pwrite(fd, new.pack(), _SLOTS[new.generation % 2])
        return True
    finally:
        os.close(fd)  # drops the lock


__all__ = ["HEADER_BYTES", "RECORD", "Header", "MappedFile", "append", "open_file", "read_header",
           "write_file"]
