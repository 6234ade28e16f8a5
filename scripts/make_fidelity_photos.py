"""Regenerate labelsd's fidelity set: daemon/labelsd/data/fidelity/*.jpg and SOURCES.md.

The set is what `precision = auto` measures each precision's labels against fp32's on
(labelsd.model.fidelity): real photos, free to redistribute, each squashed to the
largest model input (299 x 299, without cropping, as labelsd's own decode squashes
a photo) and stored as a JPEG of quality 90; a smaller model's input is resized
from it at use. Some are crops of a photo (said in SOURCES.md), to reach two dozen
from the few free photos the Python packages ship.

Where the photos come from (read as files; nothing is downloaded or imported):
  scikit-image   (a test dependency of labelsd)
  scikit-learn   sklearn/datasets/images
  matplotlib     matplotlib/mpl-data/sample_data
    pip install --no-deps --target /tmp/photos scikit-learn matplotlib
    PYTHONPATH=/tmp/photos .venv/bin/python scripts/make_fidelity_photos.py

scikit-image's bundled pictures whose licence its docstrings do not state as CC0 or
public domain are left out: coins and ihc ("no known copyright restrictions" is not a
licence), moon and page (no statement), the motorcycle stereo pair (Middlebury 2014,
no licence stated), rocket (its Flickr page says CC BY-NC 2.0, against the docstring's
public domain: scikit-image issue 5095), and the logo, colour wheel and phantom
(drawings, not photos).
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

from PIL import Image

SIZE = 299  # InceptionV3's input; EfficientNet-Lite0's 224 is resized from it
QUALITY = 85
OUT = Path(__file__).resolve().parent.parent / "daemon" / "labelsd" / "data" / "fidelity"

SKIMAGE = "scikit-image (skimage/data), licence as its skimage.data docstring states"
SKLEARN = "scikit-learn (sklearn/datasets/images/README.txt)"
MPL = "matplotlib (mpl-data/sample_data)"

# (file written, package, file in the package's folder, crop box on the original or None,
#  where the photo comes from, its licence)
PHOTOS = (
    ("astronaut", "skimage", "data/astronaut.png", None,
     f"{SKIMAGE}: Eileen Collins, NASA Great Images database", "public domain (NASA)"),
    ("astronaut-shuttle", "skimage", "data/astronaut.png", (330, 0, 512, 330),
     f"{SKIMAGE}: crop of astronaut.png (the shuttle model)", "public domain (NASA)"),
    ("camera", "skimage", "data/camera.png", None,
     f"{SKIMAGE}: photographer Lav Varshney", "CC0"),
    ("camera-tripod", "skimage", "data/camera.png", (200, 20, 430, 250),
     f"{SKIMAGE}: crop of camera.png (the camera)", "CC0"),
    ("chelsea", "skimage", "data/chelsea.png", None,
     f"{SKIMAGE}: Chelsea the cat, photographer Stefan van der Walt", "CC0"),
    ("coffee", "skimage", "data/coffee.png", None,
     f"{SKIMAGE}: photographer Rachel Michetti, courtesy of Pikolo Espresso Bar", "CC0"),
    ("clock", "skimage", "data/clock_motion.png", None,
     f"{SKIMAGE}: motion-blurred wall clock, photographer Stefan van der Walt", "public domain"),
    ("hubble", "skimage", "data/hubble_deep_field.jpg", None,
     f"{SKIMAGE}: Hubble eXtreme Deep Field, HubbleSite", "public domain (NASA)"),
    ("hubble-corner", "skimage", "data/hubble_deep_field.jpg", (0, 0, 436, 436),
     f"{SKIMAGE}: crop of hubble_deep_field.jpg (top left)", "public domain (NASA)"),
    ("retina", "skimage", "data/retina.jpg", None,
     f"{SKIMAGE}: fundus photograph, Mikael Häggström, Wikimedia Commons", "CC0"),
    ("retina-centre", "skimage", "data/retina.jpg", (300, 300, 1100, 1100),
     f"{SKIMAGE}: crop of retina.jpg (centre)", "CC0"),
    ("brick", "skimage", "data/brick.png", None,
     f"{SKIMAGE}: brick wall, from CC0Textures (Bricks25), transformed by scikit-image", "CC0"),
    ("grass", "skimage", "data/grass.png", None,
     f"{SKIMAGE}: grass, linolafett on DeviantArt (Grass-01), cropped by scikit-image", "CC0"),
    ("gravel", "skimage", "data/gravel.png", None,
     f"{SKIMAGE}: gravel, from CC0Textures (Gravel04), cropped by scikit-image", "CC0"),
    ("cell", "skimage", "data/cell.png", None,
     f"{SKIMAGE}: quantitative phase image of a cell, Paul Müller et al. (2018)", "CC0"),
    ("horse", "skimage", "data/horse.png", None,
     f"{SKIMAGE}: horse silhouette, Andreas Preuss (marauder) on openclipart", "CC0"),
    ("text", "skimage", "data/text.png", None,
     f"{SKIMAGE}: handwritten text, Wikipedia File:Corner.png", "public domain"),
    ("microaneurysms", "skimage", "data/microaneurysms.png", None,
     f"{SKIMAGE}: retina detail, HRF Image Database (Andreas Maier)", "CC0"),
    ("china", "sklearn", "datasets/images/china.jpg", None,
     f"{SKLEARN}: Summer Palace, Beijing; danielbuechele on Flickr (photo 6061409035)",
     "CC BY 2.0: by danielbuechele; squashed to 299 x 299 and re-encoded"),
    ("china-pagoda", "sklearn", "datasets/images/china.jpg", (0, 0, 330, 427),
     f"{SKLEARN}: crop of china.jpg (the pagoda)",
     "CC BY 2.0: by danielbuechele; cropped, squashed to 299 x 299 and re-encoded"),
    ("china-shore", "sklearn", "datasets/images/china.jpg", (400, 150, 640, 427),
     f"{SKLEARN}: crop of china.jpg (trees and the lake)",
     "CC BY 2.0: by danielbuechele; cropped, squashed to 299 x 299 and re-encoded"),
    ("flower", "sklearn", "datasets/images/flower.jpg", None,
     f"{SKLEARN}: a dahlia; vultilion on Flickr (photo 6056698931; the README's "
     "attribution line names danielbuechele, its link vultilion)",
     "CC BY 2.0: by vultilion; squashed to 299 x 299 and re-encoded"),
    ("flower-bloom", "sklearn", "datasets/images/flower.jpg", (150, 40, 450, 340),
     f"{SKLEARN}: crop of flower.jpg (the bloom)",
     "CC BY 2.0: by vultilion; cropped, squashed to 299 x 299 and re-encoded"),
    ("grace-hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", None,
     f"{MPL}: Commodore Grace M. Hopper, official U.S. Navy portrait (1984)",
     "public domain (a work of the U.S. federal government)"),
    ("grace-hopper-face", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", (110, 60, 410, 360),
     f"{MPL}: crop of grace_hopper.jpg (the face)", "public domain (a work of the U.S. federal government)"),
)


def package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed: see this script's doc")
    return Path(next(iter(spec.submodule_search_locations)))


def squashed(path: Path, box) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "P"):  # the horse: black on transparent -> black on white
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        img = img.convert("L" if img.mode in ("L", "I;16", "1") else "RGB")
        if box:
            img = img.crop(box)
        return img.resize((SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.jpg"):
        old.unlink()
    lines = ["# The fidelity set", "",
             "Real photos that `precision = auto` compares each precision's labels on "
             "(labelsd.model.fidelity). Each is squashed to 299 x 299 (no crop, as labelsd's own "
             "decode squashes a photo) unless a crop is said, and stored as a JPEG of quality "
             f"{QUALITY}. Made by scripts/make_fidelity_photos.py, which says which bundled "
             "pictures were left out and why.", "",
             "| file | source | licence |", "| --- | --- | --- |"]
    total = 0
    for stem, package, rel, box, source, licence in PHOTOS:
        img = squashed(package_folder(package) / rel, box)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=QUALITY, optimize=True)
        (OUT / f"{stem}.jpg").write_bytes(buf.getvalue())
        total += len(buf.getvalue())
        where = f"{source}; crop box {box} of the original" if box else source
        lines.append(f"| {stem}.jpg | {where} | {licence} |")
    (OUT / "SOURCES.md").write_text("\n".join(lines) + "\n")
    print(f"{len(PHOTOS)} photos, {total / 1024:.0f} KiB, in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
