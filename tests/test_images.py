"""decode_for_inception: every mode and format, orientation, transparency, bad input."""

from __future__ import annotations

import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imagegen import (
    make_animated_gif,
    make_animated_webp,
    make_bomb_png,
    make_exif_rotated_jpeg,
    make_image,
    make_not_an_image,
    make_phone_jpeg,
    make_truncated_jpeg,
    make_truncated_png,
    pattern,
    to_mode,
)
from labelsd.errors import ImageError, LabelsError
from labelsd.model import decode as images
from labelsd.model.decode import (
    EmptyFile,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    decode_for_inception,
)
from labelsd.model.inception import INPUT_SIZE, preprocess_inception
from labelsd.paths import is_image_name

SIZE = (120, 80)
RED = np.array([1.0, -1.0, -1.0], dtype=np.float32)
WHITE = np.ones(3, dtype=np.float32)


def decode_file(path):
    return decode_for_inception(path.read_bytes())


def assert_inception_input(decoded):
    assert decoded.pixels.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    assert decoded.pixels.dtype == np.float32
    assert decoded.pixels.min() >= -1.0 and decoded.pixels.max() <= 1.0


def expected_pixels(mode, seed, transparency=None):
    """What the decoder should produce, built the slow obvious way from the same pattern."""
    channels = 4 if mode in ("RGBA", "LA", "PA") else 3
    img = to_mode(pattern(SIZE, seed, channels), mode)
    if mode in ("I;16", "I", "F"):  # imagegen stores 8-bit grey * 257
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).round().astype(np.uint8))
    if transparency is not None:
        img.info["transparency"] = transparency
    if "A" in mode or transparency is not None:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    rgb = img.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    return preprocess_inception(np.asarray(rgb))


# name, mode, save kwargs, expected format, tolerance (mean |diff| in [-1, 1] units)
DECODE_TABLE = [
    ("rgb.jpg", "RGB", {}, "JPEG", 0.05),
    ("l.jpg", "L", {}, "JPEG", 0.05),
    ("cmyk.jpg", "CMYK", {}, "JPEG", 0.05),
    ("rgb.png", "RGB", {}, "PNG", 0.01),
    ("l.png", "L", {}, "PNG", 0.01),
    ("la.png", "LA", {}, "PNG", 0.02),
    ("p.png", "P", {}, "PNG", 0.01),
    ("p-transparent.png", "P", {"transparency": 0}, "PNG", 0.02),
    ("rgba.png", "RGBA", {}, "PNG", 0.02),
    ("i16.png", "I;16", {}, "PNG", 0.01),
    ("1.png", "1", {}, "PNG", 0.05),
    ("rgb.gif", "RGB", {}, "GIF", 0.05),
    ("p-transparent.gif", "P", {"transparency": 0}, "GIF", 0.02),
    ("rgb.bmp", "RGB", {}, "BMP", 0.01),
    ("1.bmp", "1", {}, "BMP", 0.05),
    ("p.bmp", "P", {}, "BMP", 0.01),
    ("rgb.tif", "RGB", {}, "TIFF", 0.01),
    ("cmyk.tif", "CMYK", {}, "TIFF", 0.01),
    ("rgba.tif", "RGBA", {}, "TIFF", 0.02),
    ("i16.tif", "I;16", {}, "TIFF", 0.01),
    ("i32.tif", "I", {}, "TIFF", 0.01),
    ("f32.tif", "F", {}, "TIFF", 0.01),
    ("rgb.webp", "RGB", {"quality": 90}, "WEBP", 0.05),
    ("rgba.webp", "RGBA", {"lossless": True}, "WEBP", 0.02),
    ("rgb.heic", "RGB", {"quality": 90}, "HEIF", 0.05),
    ("rgb.avif", "RGB", {"quality": 90}, "AVIF", 0.05),
]


@pytest.mark.parametrize(
    ("name", "mode", "save_kwargs", "fmt", "tolerance"), DECODE_TABLE, ids=[r[0] for r in DECODE_TABLE]
)
def test_decode_table(tmp_path, name, mode, save_kwargs, fmt, tolerance):
    path = make_image(tmp_path / name, size=SIZE, mode=mode, seed=3, **save_kwargs)
    decoded = decode_file(path)
    assert_inception_input(decoded)
    assert (decoded.width, decoded.height, decoded.format) == (*SIZE, fmt)
    want = expected_pixels(mode, seed=3, transparency=save_kwargs.get("transparency"))
    assert np.abs(decoded.pixels - want).mean() < tolerance


@pytest.mark.parametrize("make", [make_animated_gif, make_animated_webp])
def test_animated_uses_first_frame(tmp_path, make):
    decoded = decode_file(make(tmp_path / f"anim.{make.__name__[-4:]}"))
    assert_inception_input(decoded)
    assert (decoded.width, decoded.height) == (64, 48)
    assert np.allclose(decoded.pixels.mean(axis=(0, 1)), RED, atol=0.05)


@pytest.mark.parametrize(
    ("name", "mode", "save_kwargs"),
    [
        ("rgba.png", "RGBA", {}),
        ("la.png", "LA", {}),
        ("p.png", "P", {"transparency": 0}),
        ("p.gif", "P", {"transparency": 0}),
        ("rgba.webp", "RGBA", {"lossless": True}),
        ("rgba.tif", "RGBA", {}),
    ],
)
def test_transparent_pixels_become_white(tmp_path, name, mode, save_kwargs):
    # Left half fully transparent black, right half opaque red.
    img = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (50, 0, 100, 50))
    if mode == "LA":
        img = img.convert("LA")
    elif mode == "P":
        img = img.convert("RGB").quantize(colors=4)
        img.paste(0, (0, 0, 50, 50))  # index 0 is the transparent one
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        img.paste(1, (50, 0, 100, 50))
    img.save(tmp_path / name, **save_kwargs)
    pixels = decode_file(tmp_path / name).pixels
    assert np.allclose(pixels[:, :120], WHITE, atol=0.02)
    right = pixels[:, 180:].mean(axis=(0, 1))
    want = np.full(3, -0.4, dtype=np.float32) if mode == "LA" else RED  # red in grey is 76
    assert np.allclose(right, want, atol=0.05)


# Where the stored top-left (red) quarter must be once displayed, for each orientation.
CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


@pytest.mark.parametrize("orientation", sorted(CORNER))
def test_exif_orientation(tmp_path, orientation):
    decoded = decode_file(make_exif_rotated_jpeg(tmp_path / "o.jpg", orientation, size=(200, 100)))
    swapped = orientation >= 5
    assert (decoded.width, decoded.height) == ((100, 200) if swapped else (200, 100))
    near, far = 40, INPUT_SIZE - 40
    spots = {"tl": (near, near), "tr": (near, far), "bl": (far, near), "br": (far, far)}
    for corner, (y, x) in spots.items():
        is_red = decoded.pixels[y, x, 0] > 0.5 and decoded.pixels[y, x, 2] < -0.5
        assert is_red == (corner == CORNER[orientation]), corner


def test_phone_jpeg_orientation_reports_displayed_full_size(tmp_path):
    decoded = decode_file(make_phone_jpeg(tmp_path / "p.jpg", seed=1, orientation=6))
    assert (decoded.width, decoded.height, decoded.format) == (3000, 4000, "JPEG")
    assert_inception_input(decoded)


@pytest.mark.parametrize(
    ("size", "drafted"),
    [
        ((4000, 3000), (500, 375)),  # 1/8
        ((1000, 600), (500, 300)),  # 1/2: 1/4 would make the short side 150
        ((700, 400), (700, 400)),
        ((300, 300), (300, 300)),
    ],
)
def test_jpeg_draft_decodes_small_but_never_below_input_size(tmp_path, monkeypatch, size, drafted):
    seen = []
    real = images.to_rgb_or_rgba
    monkeypatch.setattr(images, "to_rgb_or_rgba", lambda img: seen.append(img.size) or real(img))
    path = make_phone_jpeg(tmp_path / "p.jpg", size=size)
    decoded = decode_file(path)
    assert seen == [drafted]
    assert min(seen[0]) >= INPUT_SIZE
    assert (decoded.width, decoded.height) == size  # the original resolution, not the draft's


def test_distinct_seeds_give_distinct_bytes(tmp_path):
    a = make_phone_jpeg(tmp_path / "a.jpg", seed=1).read_bytes()
    b = make_phone_jpeg(tmp_path / "b.jpg", seed=2).read_bytes()
    assert a != b and a == make_phone_jpeg(tmp_path / "c.jpg", seed=1).read_bytes()


BAD_INPUTS = [
    ("empty.jpg", lambda p: (p.write_bytes(b""), p)[1], EmptyFile, "empty file"),
    ("text.jpg", make_not_an_image, NotAnImage, "not an image"),
    ("trunc.jpg", make_truncated_jpeg, TruncatedImage, "truncated JPEG"),
    ("trunc.png", make_truncated_png, TruncatedImage, "truncated PNG"),
    ("header.jpg", lambda p: make_truncated_jpeg(p, keep=0.01), TruncatedImage, "truncated JPEG"),
    ("bomb.png", make_bomb_png, ImageTooLarge, "image is 60000x60000, larger than the 178 MP limit"),
    ("wide.png", lambda p: make_bomb_png(p, size=(2_000_000, 100)), ImageTooLarge,
     "image is 2000000x100, larger than the 178 MP limit"),
    # EPS would run Ghostscript: only photo formats may open, whatever the name says.
    ("eps.jpg", lambda p: make_not_an_image(p, "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
     NotAnImage, "not an image"),
]


@pytest.mark.parametrize(("name", "make", "error", "reason"), BAD_INPUTS, ids=[r[0] for r in BAD_INPUTS])
def test_bad_input_has_a_reason(tmp_path, name, make, error, reason):
    with pytest.raises(error) as info:
        decode_file(make(tmp_path / name))
    assert str(info.value) == reason
    assert isinstance(info.value, ImageError) and isinstance(info.value, LabelsError)


def test_bomb_file_is_tiny(tmp_path):
    assert make_bomb_png(tmp_path / "bomb.png").stat().st_size < 200


def test_pillow_bomb_check_if_reenabled_still_gives_image_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    with pytest.raises(ImageTooLarge, match="larger than the 178 MP limit"):
        decode_file(make_bomb_png(tmp_path / "bomb.png"))


def test_under_the_limit_no_pillow_bomb_warning(tmp_path):
    # 10000x9000 is above Pillow's warning threshold (89 MP) and below labelsd's limit.
    path = make_bomb_png(tmp_path / "big.png", size=(10_000, 9_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TruncatedImage, match="truncated PNG"):
            decode_file(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(min_value=0, max_value=4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    fmt=st.sampled_from(["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"]),
)
def test_damaged_bytes_give_image_error_or_a_decode(cut, flips, fmt):
    buf = BytesIO()
    Image.fromarray(pattern((60, 40), seed=5)).save(buf, fmt)
    data = bytearray(buf.getvalue()[: max(cut, 1)])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    try:
        decoded = decode_for_inception(bytes(data))
    except ImageError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert_inception_input(decoded)


def test_preprocessing_equals_keras():
    inception_v3 = pytest.importorskip("keras.applications.inception_v3")
    rgb = np.random.default_rng(0).integers(0, 256, size=(INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    ours = preprocess_inception(rgb)
    theirs = np.asarray(inception_v3.preprocess_input(rgb.astype(np.float32)))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_module_does_not_import_tensorflow():
    code = "import sys, labelsd.model.decode; sys.exit(any(m in sys.modules for m in ('tensorflow', 'keras')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_decoding_in_threads_gives_the_same_results(tmp_path):
    exts = ["jpg", "png", "webp", "heic"] * 3
    paths = [make_image(tmp_path / f"{i}.{ext}", size=(400, 300), seed=i) for i, ext in enumerate(exts)]
    blobs = [p.read_bytes() for p in paths]
    alone = [decode_for_inception(b).pixels for b in blobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(lambda b: decode_for_inception(b).pixels, blobs * 3))
    for i, pixels in enumerate(together):
        np.testing.assert_array_equal(pixels, alone[i % len(blobs)])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("photo.jpg", True),
        ("IMG_0001.JPG", True),
        ("/inbox/scan.TIFF", True),
        ("iphone.HEIC", True),
        ("a.avif", True),
        ("x.webp", True),
        ("notes.txt", False),
        ("photo.jpg.part", False),
        ("photo.jpg~", False),
        ("/dir.jpg/README", False),
        ("noextension", False),
        ("doc.pdf", False),
    ],
)
def test_is_image_name(path, expected):
    assert is_image_name(path) is expected
