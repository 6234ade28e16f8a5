"""Thumbnails and captions shared by both contact sheets (gallery_sheet.py's
PNG/JPEG grid and gallery.py's HTML page), and their atomic output.

Pillow only (no TensorFlow): thumbnails are decoded with JPEG draft mode (libjpeg
decodes a 12 MP photo at 1/8 scale), turned upright by EXIF orientation, and
shrunk keeping the aspect ratio. A file that is gone or cannot be read gets
the reason instead of an image, never an exception.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageOps

from labelsd.errors import LabelsError
from labelsd.fileio import atomic_output, open_regular
from labelsd.model import decode as images
from labelsd.paths import shown
from labelsd.records import ImageRecord

log = logging.getLogger(__name__)

BACKGROUND = (255, 255, 255)
TILE_BACKGROUND = (232, 232, 232)
PLACEHOLDER_BACKGROUND = (250, 226, 226)
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)
PLACEHOLDER_TEXT = (150, 30, 30)


class GalleryError(LabelsError):
    """A contact sheet cannot be written (bad output name, too large, unwritable)."""


def score_text(score: float) -> str:
    return f"{score:.1%}"


def label_lines(rec: ImageRecord) -> list[str]:
    """What goes under an image in place of its labels when it has none."""
    if rec.labels:
        return [f"{p.label} {score_text(p.score)}" for p in rec.labels[:3]]
    if rec.status == "failed":
        return [f"failed: {rec.error or 'unknown reason'}"]
    return [rec.status]  # pending, or missing before it was ever classified


@dataclass(frozen=True)
class Thumbnail:
    image: Image.Image | None  # RGB, longest side <= the tile; None for a placeholder
    reason: str | None = None  # why there is no image ("missing", "not an image", ...)


def thumbnail(path: str, size: int) -> Thumbnail:
    """An upright thumbnail of the file at `path` fitting `size`x`size`, or the
    reason there is none. Never raises for a bad file, never follows a symlink
    and never blocks on a FIFO (fileio.open_regular, as the pipeline's reader)."""
    try:
        fh, _ = open_regular(path, max_bytes=images.max_file_bytes())
    except Exception as err:  # noqa: BLE001 - gone, unreadable, not a regular file: say why
        log.debug("thumbnail of %s failed", shown(path), exc_info=True)
        return Thumbnail(None, str(images.image_error(err)))
    with fh:
        return thumbnail_of(fh, size, path)


def thumbnail_of(fh: BinaryIO, size: int, name: str = "") -> Thumbnail:
    """`thumbnail` of an image already open (a file `open_regular` opened, or its
    bytes in a BytesIO: `labels serve` checks them against their content hash
    first); `name` is only for the debug log."""
    try:
        # The decoder's allow-list (no EPS, no PDF) and its HEIF opener.
        with Image.open(fh, formats=images.register_openers()) as img:
            width, height = img.size
            if width * height > images.MAX_PIXELS:
                return Thumbnail(None, f"too large to show ({width}x{height})")
            img.draft("RGB", (size, size))  # JPEG: decode at 1/2..1/8 scale, never below size
            img.load()
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - broken EXIF: show it as stored
                log.debug("unreadable EXIF in %s", shown(name), exc_info=True)
                upright = img
            upright = images.to_rgb_or_rgba(images.shrink_wide(upright, (2 * size, 2 * size)))
            upright.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
            if upright.mode == "RGBA":
                flat = Image.new("RGB", upright.size, TILE_BACKGROUND)
                flat.paste(upright, mask=upright.getchannel("A"))
                upright = flat
            return Thumbnail(upright.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - plugins raise anything on bad data
        log.debug("thumbnail of %s failed", shown(name), exc_info=True)
        return Thumbnail(None, str(images.image_error(err)))


def write_output(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` atomically, so a reader never sees half a sheet."""
    try:
        with atomic_output(path, "wb") as out:
            out.write(data)
    except OSError as err:
        raise GalleryError(f"cannot write {os.path.abspath(os.fspath(path))}: "
                           f"{err.strerror or err}; check that its folder exists and is "
                           "writable") from err
