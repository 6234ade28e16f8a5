"""Decode any photo's bytes into one model input (size x size x 3 float32, the model's preprocessing).

The size and the preprocessing belong to the model (`ModelSpec.decode` passes
them); this module knows only how to turn any photo into a square of pixels.

Used by the service's decode threads, so it never imports TensorFlow and keeps no
mutable state besides registering the HEIF opener once. Every failure becomes an
``ImageError`` whose message is the reason stored on the image ("empty file",
"not an image", "truncated JPEG", "image is 60000x60000, larger than the 178 MP limit").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from labelsd.errors import ImageError

log = logging.getLogger(__name__)

# Twice Pillow's default MAX_IMAGE_PIXELS: the size at which Pillow itself refuses.
# A 12 MP phone photo is far below; a 60000x60000 "PNG" of 100 bytes is far above.
MAX_PIXELS = 178_956_970

# The size cap on one file (config `max_file_mb`): a file is read into memory
# whole before it is hashed and decoded, so a sparse 3 GB "photo" must fail
# with a reason instead. 256 MiB holds any camera's JPEG, HEIF or PNG and
# most scanned TIFFs; the pixel limit above bounds what decoding costs.
MAX_FILE_MB = 256
_max_file_bytes = MAX_FILE_MB << 20


def set_max_file_mb(megabytes: int) -> None:
    """Set the size cap for this process (the service, at start and reload)."""
    global _max_file_bytes
    _max_file_bytes = int(megabytes) << 20


def max_file_bytes() -> int:
    return _max_file_bytes


# Only these Pillow plugins may open a file, whatever its name: the others include
# EPS (runs Ghostscript) and PDF, which have no business in a photo inbox.
DECODE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "HEIF", "AVIF")

# Magic numbers, so a reason can name the format when Pillow cannot read the header
# (WebP, HEIF and AVIF are recognised in _sniff).
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that rotate by 90 degrees
_WHITE = (255, 255, 255, 255)


class EmptyFile(ImageError):
    """The file has no bytes."""


class NotAnImage(ImageError):
    """The bytes are not in any image format labelsd decodes."""


class TruncatedImage(ImageError):
    """The file ends (or breaks) before all of its pixels."""


class ImageTooLarge(ImageError):
    """The declared pixel count is over MAX_PIXELS (a decompression bomb or a huge scan)."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # float32 (size, size, 3), preprocessed for the model that asked
    width: int  # as displayed (after EXIF orientation), at the original resolution
    height: int
    format: str  # Pillow's format name: 'JPEG', 'PNG', 'HEIF', 'AVIF', ...


_open_formats: tuple[str, ...] = ()  # DECODE_FORMATS that have an opener, set once
_register_lock = threading.Lock()


def register_openers() -> tuple[str, ...]:
    """Register HEIF once per process (AVIF is native in Pillow >= 11.3) and
    return the DECODE_FORMATS this Pillow can open: the allow-list to pass to
    ``Image.open(..., formats=...)`` (no EPS, no PDF).

    Pillow's own bomb check is turned off because it fires inside ``Image.open``
    without the size in words (and only warns between 89 and 179 MP, through the
    non-thread-safe warnings machinery); ``_check_size`` enforces MAX_PIXELS instead.
    """
    global _open_formats
    if _open_formats:
        return _open_formats
    with _register_lock:
        if _open_formats:
            return _open_formats
        from pillow_heif import register_heif_opener

        register_heif_opener()
        Image.MAX_IMAGE_PIXELS = None
        Image.init()
        # Keep only formats this Pillow build can open (Image.open rejects unknown names).
        # Multi-picture phone JPEGs need no "MPO" entry: the JPEG opener returns them.
        _open_formats = tuple(f for f in DECODE_FORMATS if f in Image.OPEN)
        return _open_formats


def decode_for_inception(data: bytes) -> DecodedImage:
    """InceptionV3's input (the default model's `decode`), for callers that want that one."""
    from labelsd.model.registry import get_model

    return get_model("inception_v3").decode(data)


def decode_image(data: bytes, size: int,
                 preprocess: Callable[[np.ndarray], np.ndarray]) -> DecodedImage:
    """Decode image bytes into a (size, size, 3) input, `preprocess` applied to its
    uint8 RGB pixels; raise ImageError with the reason."""
    if not data:
        raise EmptyFile("empty file")
    formats = register_openers()
    fmt = _sniff(data)
    try:
        with Image.open(BytesIO(data), formats=formats) as img:
            fmt = "JPEG" if img.format == "MPO" else (img.format or fmt or "image")
            return _decode(img, fmt, size, preprocess)
    except Exception as exc:  # noqa: BLE001 - plugins raise anything on bad data
        raise image_error(exc, fmt) from exc


def image_error(exc: BaseException, fmt: str | None = None) -> ImageError:
    """The one mapping from what opening or decoding an image raised to the
    reason a person reads (the reader stores it, the gallery shows it).
    `fmt`: the format sniffed from the bytes, when known."""
    if isinstance(exc, ImageError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return ImageError("missing")
    if isinstance(exc, PermissionError):
        return ImageError("cannot read: permission denied")
    if isinstance(exc, UnidentifiedImageError):
        return NotAnImage(f"corrupt {fmt} header" if fmt else "not an image")
    if isinstance(exc, Image.DecompressionBombError):  # only if someone re-enabled Pillow's check
        return ImageTooLarge(f"image is larger than the {MAX_PIXELS // 1_000_000} MP limit")
    if isinstance(exc, MemoryError):
        return ImageError("not enough memory to decode this image")
    if isinstance(exc, (OSError, SyntaxError, EOFError)) and _is_truncation(exc):
        return TruncatedImage(f"truncated {fmt or 'image'}")
    if isinstance(exc, OSError) and exc.strerror:
        return ImageError(f"cannot read: {exc.strerror}")
    return ImageError(_short_reason(fmt, exc))


def _decode(img: Image.Image, fmt: str, size: int, preprocess) -> DecodedImage:
    width, height = img.size  # before draft() shrinks it
    _check_size(width, height)

    # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below `size`
    # on either side (Pillow picks the largest scale that keeps both >= the request).
    img.draft("RGB", (size, size))
    img.load()  # the full decode, here, so truncation raises instead of leaving grey

    # Read after load: Pillow's TIFF plugin applies the orientation itself while
    # loading (its size is already oriented) and drops the tag; JPEG, WebP, PNG keep it.
    orientation = _orientation(img)
    if orientation in _SWAPS_AXES:
        width, height = height, width
    if orientation not in (None, 1):
        img = ImageOps.exif_transpose(img)
    rgb = to_rgb_or_rgba(shrink_wide(img, (2 * size, 2 * size)))
    # Squash to a square without cropping, like keras load_img(target_size=...).
    # BILINEAR is antialiased in Pillow (its support widens when shrinking); the
    # reducing gap first box-reduces big PNGs/TIFFs by an integer factor, for speed.
    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if rgb.mode == "RGBA":  # after the resize, which premultiplies alpha: composite size x size only
        rgb = Image.alpha_composite(Image.new("RGBA", rgb.size, _WHITE), rgb).convert("RGB")
    pixels = preprocess(np.asarray(rgb))
    return DecodedImage(pixels=pixels, width=width, height=height, format=fmt)


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(
            f"image is {width}x{height}, larger than the {MAX_PIXELS // 1_000_000} MP limit"
        )


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation (1..8), or None when absent or unreadable (then shown as stored)."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - broken EXIF must not fail the photo
        log.debug("unreadable EXIF", exc_info=True)
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


_EXTREMA = "labelsd_extrema"  # info key: a shrunk wide image's range, from every pixel


def shrink_wide(img: Image.Image, fit: tuple[int, int]) -> Image.Image:
    """A high-bit-depth image (I;16, I, F: 2 or 4 bytes a sample) shrunk into
    `fit` (keeping its aspect), in its own mode, for a caller that shrinks to
    that box anyway: `to_rgb_or_rgba` then never copies it at full size (a
    169 MP 16-bit PNG is 338 MB as read; a float64 copy of it was 1.35 GB, and
    the arithmetic on that more). Other images are returned as they are."""
    if not (img.mode.startswith("I") or img.mode == "F"):
        return img
    if img.width <= fit[0] and img.height <= fit[1]:
        return img
    extrema = img.getextrema()  # over every pixel, in C, without a copy
    scale = min(fit[0] / img.width, fit[1] / img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    small = img.resize(size, Image.Resampling.BILINEAR)  # (Pillow's reduce() has no I;16)
    small.info[_EXTREMA] = extrema
    return small


def to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 'RGB', or 'RGBA' when the image has transparency."""
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img
    if mode.startswith("I") or mode == "F":  # I;16*, I, F: scale to 8 bits, don't clip
        extrema = img.info.get(_EXTREMA) or img.getextrema()
        return Image.fromarray(_to_uint8(np.asarray(img), sixteen_bit=mode.startswith("I;16"),
                                         extrema=extrema))
    has_alpha = "A" in mode or "a" in mode or "transparency" in img.info
    return img.convert("RGBA" if has_alpha else "RGB")


def _to_uint8(arr: np.ndarray, sixteen_bit: bool,
              extrema: tuple[float, float] | None = None) -> np.ndarray:
    """High-bit-depth greyscale -> RGB uint8 (Pillow's own convert would clip at 255).

    I;16 is 16-bit by definition; I and F carry no range, so guess from the values
    (`extrema`, those of the whole image when `arr` is a shrunk copy):
    [0, 1] floats, [0, 255], [0, 65535], else stretch min..max. float32 at most:
    8 bits out need no more.
    """
    is_float = arr.dtype.kind == "f"
    arr = np.nan_to_num(arr.astype(np.float32))
    lo, hi = (float(v) for v in extrema) if extrema is not None else (arr.min(), arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN or inf somewhere: what is finite
        lo, hi = float(arr.min()), float(arr.max())
    if sixteen_bit:
        arr /= np.float32(257.0)
    elif is_float and lo >= 0 and hi <= 1.0:
        arr *= np.float32(255.0)
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        arr /= np.float32(257.0)
    else:
        arr = (arr - np.float32(lo)) * np.float32(255.0 / max(hi - lo, 1e-12))
    gray = np.clip(arr, 0, 255).round().astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _sniff(data: bytes) -> str | None:
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"
    return None


def _is_truncation(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, EOFError) or "truncated" in text or "broken data stream" in text


def _short_reason(fmt: str | None, exc: BaseException) -> str:
    detail = " ".join(str(exc).split())[:100] or type(exc).__name__
    return f"cannot decode {fmt or 'image'}: {detail}"
