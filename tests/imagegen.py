"""Write real image files for tests: every mode and format labelsd must decode,
phone-sized JPEGs, EXIF-rotated ones, and the bad inputs (truncated, bomb, not an image).

Import from any test as ``from imagegen import make_image`` (tests/ is on sys.path
because pytest's default "prepend" import mode inserts the folder of tests/conftest.py).
Every function writes one file and returns its path. Content comes from a seeded
numpy pattern, so distinct seeds give distinct bytes (and distinct SHA-256).
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from pillow_heif import register_heif_opener

register_heif_opener()  # so make_image(..."x.heic") can save HEIF; AVIF is native in Pillow

ORIENTATION_TAG = 0x0112


def pattern(size: tuple[int, int], seed: int = 0, channels: int = 3) -> np.ndarray:
    """A smooth seeded colour pattern (uint8, shape (h, w, channels)) that compresses like a photo."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, channels), dtype=np.uint8)
    bands = [Image.fromarray(coarse[:, :, c]).resize(size, Image.Resampling.BILINEAR) for c in range(channels)]
    return np.stack([np.asarray(band) for band in bands], axis=-1)


def to_mode(rgb_or_rgba: np.ndarray, mode: str) -> Image.Image:
    """Build an image of any Pillow mode from an 8-bit RGB(A) array."""
    arr = rgb_or_rgba
    rgba = Image.fromarray(arr, "RGBA" if arr.shape[-1] == 4 else "RGB")
    if mode in ("RGBA", "LA", "PA"):
        return rgba.convert(mode) if mode != "PA" else rgba.convert("RGBA").convert("PA")
    rgb = rgba.convert("RGB")
    if mode == "P":
        return rgb.quantize(colors=64)
    if mode in ("I;16", "I", "F"):
        gray = np.asarray(rgb.convert("L")).astype(np.uint16) * 257  # full 16-bit range
        if mode == "I;16":
            return Image.fromarray(gray)  # uint16 -> "I;16"
        return Image.fromarray(gray.astype(np.int32 if mode == "I" else np.float32))
    return rgb.convert(mode)  # L, 1, CMYK, YCbCr, RGB


def make_image(path, size=(64, 48), mode="RGB", fmt=None, seed=0, **save_kwargs) -> Path:
    """Write a ``size`` (w, h) image of ``mode`` as ``fmt`` (default: from the extension)."""
    path = Path(path)
    channels = 4 if mode in ("RGBA", "LA", "PA") else 3
    img = to_mode(pattern(size, seed, channels), mode)
    img.save(path, format=fmt, **save_kwargs)
    return path


def make_exif_rotated_jpeg(path, orientation: int, size=(200, 100), quality=95) -> Path:
    """A blue JPEG with a red top-left quarter as stored, tagged with EXIF ``orientation``."""
    w, h = size
    img = Image.new("RGB", size, (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, w // 2, h // 2))
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    img.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return Path(path)


def make_phone_jpeg(path, seed: int = 0, orientation: int | None = None, size=(4000, 3000)) -> Path:
    """A 12 MP camera-like JPEG (quality 90), optionally with an EXIF orientation."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "labelsd", "test phone"  # Make, Model
    if orientation is not None:
        exif[ORIENTATION_TAG] = orientation
    Image.fromarray(pattern(size, seed)).save(path, "JPEG", quality=90, exif=exif.tobytes())
    return Path(path)


def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size of each image labelsd's thumbnails decode (serve/thumbnails.py; JPEG
    draft mode decodes a 12 MP photo at 1/8 scale), from now on in the test: noted as
    it is turned upright."""
    from PIL import ImageOps

    decoded: list[tuple[int, int]] = []
    real_transpose = ImageOps.exif_transpose

    def spy(img, **kwargs):
        decoded.append(img.size)
        return real_transpose(img, **kwargs)

    monkeypatch.setattr(ImageOps, "exif_transpose", spy)
    return decoded


def _make_animated(path, fmt: str, colors) -> Path:
    frames = [Image.new("RGB", (64, 48), c) for c in colors]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return Path(path)


def make_animated_gif(path, colors=((255, 0, 0), (0, 255, 0), (0, 0, 255))) -> Path:
    """A 3-frame GIF whose first frame is red."""
    return _make_animated(path, "GIF", colors)


def make_animated_webp(path, colors=((255, 0, 0), (0, 255, 0), (0, 0, 255))) -> Path:
    """A 3-frame WebP whose first frame is red."""
    return _make_animated(path, "WEBP", colors)


def _truncated(path, fmt: str, keep: float) -> Path:
    buf = BytesIO()
    Image.fromarray(pattern((640, 480), seed=7)).save(buf, fmt)
    data = buf.getvalue()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def make_truncated_jpeg(path, keep: float = 0.5) -> Path:
    """A 640x480 JPEG cut after ``keep`` of its bytes (headers intact, scan data missing)."""
    return _truncated(path, "JPEG", keep)


def make_truncated_png(path, keep: float = 0.5) -> Path:
    """A 640x480 PNG cut after ``keep`` of its bytes (inside the IDAT data)."""
    return _truncated(path, "PNG", keep)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_bomb_png(path, size=(60000, 60000)) -> Path:
    """A ~100-byte PNG whose valid IHDR declares ``size`` (default 3.6 gigapixels)."""
    ihdr = struct.pack(">IIBBBBB", size[0], size[1], 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\0" * 64)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return Path(path)


def make_not_an_image(path, text: str = "this is not an image\n") -> Path:
    """A text file (give it a .jpg name to test detection by content)."""
    Path(path).write_text(text)
    return Path(path)
