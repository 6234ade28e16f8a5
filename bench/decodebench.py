"""The decode floor: a 12 MP JPEG to the model's input on one core, Pillow's draft mode (what
labelsd does) against the decoders on PyPI that decode a JPEG at a reduced scale.

Each decoder turns the same photos into RGB pixels at the largest DCT scale that keeps both
sides at least the model's input (1/8 for 4000 x 3000 and 299: 500 x 375); then the same
Pillow resize (labelsd's: BILINEAR, reducing_gap 3.0) makes the 299 x 299 input, and its
pixels are compared with Pillow's. Time is the process's CPU time (every thread's: libvips
decodes on threads of its own; a neighbour's load hardly moves it) on one core, the best
of the interleaved rounds, per photo; wall time beside it. A decoder would be adopted only
at >= ADOPT_SPEEDUP with the pixels within TOLERANCE (mean absolute difference, 0-255) and
wheels that need no system package.

Measured (`pip install --target /tmp/dec pyvips pyvips-binary simplejpeg`, then
`PYTHONPATH=/tmp/dec:bench:daemon .venv/bin/python bench/decodebench.py`; one run, 16 photos,
5 rounds, 2-core AMD EPYC (avx2, avx512_bf16, avx512_vnni, no AMX), load 7-8 from other
work, so the wall times are two to three times the CPU times):

    decoder                               CPU ms  wall ms  vs Pillow  pixels vs Pillow (mean / max abs)
    labelsd decode_image (the service's)    29.8     74.7      1.00x  (the model's float input)
    Pillow draft + resize                   29.9     70.8      1.00x  -
    simplejpeg scaled decode                28.2     82.0      1.06x  0.000 / 0
    simplejpeg, fast DCT and upsampling     28.2     83.6      1.06x  0.000 / 0
    pyvips shrink-on-load                   32.2     93.4      0.93x  0.000 / 0

All three decode with libjpeg-turbo's scaled IDCT: the pixels are the same to the bit, and
the time is mostly the entropy decoding of the whole file, which no scale skips. simplejpeg
is 6% faster, pyvips 7% slower: neither reaches 1.2x, so labelsd keeps Pillow (one decoder
for every format, and no other dependency).
At 1/8 scale the IDCT is the DC coefficient alone, so the fast DCT changes nothing.

Not measured: PyTurboJPEG (its wheel carries no libturbojpeg: it needs the system's
libturbojpeg0, so it fails the wheels-only condition); turbojpeg 0.0.2 (bundles
libjpeg-turbo but its decompress has no scale: a full 12 MP decode costs several times a
1/8 one); imagecodecs (not tried).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchkit import cpu_line, make_photos

SIZE = 299
ADOPT_SPEEDUP = 1.2
TOLERANCE = 1.0  # mean absolute difference of the 299 x 299 pixels, 0-255


def _resize(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0))


def pillow_draft(data: bytes) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(data)) as img:
        img.draft("RGB", (SIZE, SIZE))
        return np.asarray(img.convert("RGB"))


def simplejpeg_scaled(data: bytes, fast: bool = False) -> np.ndarray:
    import simplejpeg

    return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=SIZE, min_width=SIZE,
                                  fastdct=fast, fastupsample=fast)


def pyvips_shrink(data: bytes) -> np.ndarray:
    import pyvips

    head = pyvips.Image.new_from_buffer(data, "")  # the header only: libvips loads lazily
    width, height = head.width, head.height
    shrink = max(s for s in (1, 2, 4, 8) if width // s >= SIZE and height // s >= SIZE)
    img = pyvips.Image.jpegload_buffer(data, shrink=shrink)
    return np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(img.height, img.width, img.bands))


def labelsd_decode(data: bytes) -> np.ndarray:
    """The service's whole decode (labelsd.model.decode), to the model's float input."""
    from labelsd.model.registry import get_model

    return get_model("inception_v3").decode(data).pixels


def decoders() -> dict:
    """{name: bytes -> 299 x 299 uint8 (or the service's float input)}, or the reason it is missing."""
    found = {"labelsd decode_image (the service's)": labelsd_decode,
             "Pillow draft + resize": lambda d: _resize(pillow_draft(d))}
    for module, name, fn in (("simplejpeg", "simplejpeg scaled decode", lambda d: _resize(simplejpeg_scaled(d))),
                             ("simplejpeg", "simplejpeg, fast DCT and upsampling",
                              lambda d: _resize(simplejpeg_scaled(d, fast=True))),
                             ("pyvips", "pyvips shrink-on-load", lambda d: _resize(pyvips_shrink(d)))):
        try:
            __import__(module)
            found[name] = fn
        except (ImportError, OSError) as err:  # pyvips raises OSError without its library
            found[name] = f"not installed ({type(err).__name__}: {str(err)[:80]})"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "labelsd-bench")
    args = parser.parse_args(argv)
    print(cpu_line(), flush=True)
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # one core: the floor is per core
    photos = [p.read_bytes() for p in make_photos(args.cache / f"photos-4000x3000-{args.images}", args.images,
                                                  (4000, 3000))]
    print(f"{len(photos)} JPEGs 4000x3000 (bench/benchkit.make_photos, quality 90), on core {core}, "
          f"best of {args.rounds} interleaved rounds; CPU time of the process (every thread: libvips "
          "decodes on threads of its own) and wall time", flush=True)
    found = decoders()
    usable = {name: fn for name, fn in found.items() if callable(fn)}
    reference = [usable["Pillow draft + resize"](d) for d in photos]
    best = dict.fromkeys(usable, float("inf"))
    wall = dict.fromkeys(usable, float("inf"))
    for _ in range(args.rounds):
        for name, fn in usable.items():
            start, clock = time.process_time(), time.perf_counter()
            for data in photos:
                fn(data)
            best[name] = min(best[name], (time.process_time() - start) / len(photos))
            wall[name] = min(wall[name], (time.perf_counter() - clock) / len(photos))
    base = best["Pillow draft + resize"]
    print(f"  {'decoder':38} {'CPU ms':>7} {'wall ms':>7}  {'vs Pillow':>9}  pixels vs Pillow (mean / max abs)  "
          "verdict")
    for name, fn in found.items():
        if not callable(fn):
            print(f"  {name:38} {fn}")
            continue
        speedup = base / best[name]
        pixels, verdict = "-", ""
        if name.startswith("labelsd"):
            pixels = "(the model's float input)"
        elif name != "Pillow draft + resize":
            diff = [np.abs(fn(d).astype(np.int16) - r.astype(np.int16)) for d, r in zip(photos, reference)]
            mean, worst = float(np.mean([x.mean() for x in diff])), int(max(x.max() for x in diff))
            pixels = f"{mean:.3f} / {worst}"
            ok = speedup >= ADOPT_SPEEDUP and mean <= TOLERANCE
            verdict = ("adopt" if ok else f"keep Pillow (needs >= {ADOPT_SPEEDUP}x and mean <= {TOLERANCE})")
        print(f"  {name:38} {1000 * best[name]:7.1f} {1000 * wall[name]:7.1f}  {speedup:8.2f}x  {pixels:34} "
              f"{verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
