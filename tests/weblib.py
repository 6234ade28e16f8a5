"""A small real library for the tests of `labels serve`: image files in a watched
folder, put through the queue and recorded as the service records them (cats, a
dog with a hostile name and tags, a photo with EXIF facts, a file that is not
an image), and a config file naming the database and the folder."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from imagegen import make_image, make_not_an_image
from labelsd import records
from labelsd.model.taxonomy import class_by_index
from labelsd.paths import canonical_path
from labelsd.records import PhotoMeta, Prediction
from labelsd.store import contents, tags, workqueue

PERSIAN, TABBY, SIAMESE, GOLDEN, BEAGLE, SPORTS_CAR = 283, 281, 284, 207, 162, 817
# The names test_gallery.py escapes, as a folder, a file and tags.
HOSTILE_FOLDER = 'odd <b>&"names\''
HOSTILE_FILE = "<img src=x onerror=alert(1)>.png"
HOSTILE_TAGS = ("<script>alert(2)</script>", 'a"b')


def predictions(*pairs: tuple[int, float]) -> list[Prediction]:
    return [Prediction(rank=rank, label=class_by_index(i).label, wnid=class_by_index(i).wnid,
                       class_index=i, score=score)
            for rank, (i, score) in enumerate(pairs, start=1)]


@dataclass
class Library:
    db: str
    photos: Path  # the watched folder
    config: Path  # a config file: db and watch
    cats: list[Path] = field(default_factory=list)
    dog: Path | None = None
    car: Path | None = None  # with EXIF facts (taken, camera, GPS)
    broken: Path | None = None  # not an image: failed

    def sha(self, path: Path) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(store, files: dict[Path, list[Prediction] | str], meta: dict | None = None) -> None:
    """Put `files` through the queue as the service would: enqueue, claim, and record
    one outcome per file in one transaction (predictions, or a failure's reason)."""
    meta = meta or {}
    workqueue.enqueue(store, [str(p) for p in files])
    claims = workqueue.claim(store, "web-test", len(files))
    assert len(claims) == len(files)
    wanted = {canonical_path(p): value for p, value in files.items()}
    photo_meta = {canonical_path(p): m for p, m in meta.items()}
    outcomes = []
    for c in claims:
        data = Path(c.path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        value = wanted[c.path]
        common = dict(claim=c, sha256=sha, size=len(data), mtime_ns=os.stat(c.path).st_mtime_ns)
        if isinstance(value, str):
            outcomes.append(records.Outcome(kind=records.OutcomeKind.BAD_IMAGE, error=value, **common))
            continue
        with Image.open(c.path) as img:
            size, fmt = img.size, img.format
        outcomes.append(records.Outcome(
            kind=records.OutcomeKind.CLASSIFIED, width=size[0], height=size[1], format=fmt,
            model="inception_v3", predictions=value, meta=photo_meta.get(c.path), **common))
    contents.record_outcomes(store, "web-test", outcomes)


def record_in(lib: Library, files: dict[Path, list[Prediction] | str]) -> None:
    """`record` `files` (copies a test adds, say) in the library's own database."""
    from labelsd.store.engine import open_store

    store = open_store(lib.db)
    try:
        record(store, files)
    finally:
        store.close()


def build_library(store, db: str, root: Path, cats: int = 6) -> Library:
    """The library every web test starts from, in `root`."""
    photos = root / "photos"
    (photos / HOSTILE_FOLDER).mkdir(parents=True)
    lib = Library(db=db, photos=photos, config=root / "config.toml")
    files: dict[Path, list[Prediction] | str] = {}
    for i in range(cats):
        path = make_image(photos / f"cat{i}.jpg", size=(320, 240), seed=i, fmt="JPEG")
        step = min(0.05, 0.6 / cats)  # scores fall with the index, from 0.9
        files[path] = predictions((PERSIAN, 0.9 - i * step), (TABBY, 0.05), (SIAMESE, 0.01))
        lib.cats.append(path)
    lib.dog = make_image(photos / HOSTILE_FOLDER / HOSTILE_FILE, size=(300, 200), seed=50)
    files[lib.dog] = predictions((GOLDEN, 0.7), (BEAGLE, 0.2))
    lib.car = make_image(photos / "car.jpg", size=(400, 300), seed=60, fmt="JPEG")
    files[lib.car] = predictions((SPORTS_CAR, 0.8))
    lib.broken = make_not_an_image(photos / "notes.jpg")
    files[lib.broken] = "not an image"
    record(store, files, meta={lib.car: PhotoMeta(taken_at="2024-07-14T15:30:00",
                                                 camera="Apple iPhone 13", gps_lat=48.8566667,
                                                 gps_lon=2.3508333)})
    tags.add_tags(store, str(lib.dog), [*HOSTILE_TAGS, "vacation"])
    lib.config.write_text(f'db = "{db}"\nwatch = ["{photos}"]\n')
    return lib


VECTOR_MODEL = "InceptionV3/web-test"  # the embedding space add_vectors writes


def add_vectors(lib: Library, skip: tuple[Path, ...] = ()) -> None:
    """Give the library's photos stored vectors without a model (made-up features
    shaped as tests/vectorkit.py shapes them, through the writer's own store_vectors):
    the cats share one scene, each further from it than the one before, and cats[1] is
    a near copy of cats[0] (a duplicate); the dog and the car have scenes of their own;
    the photos in `skip` get none (not embedded yet)."""
    import numpy as np

    from labelsd.store.embeddings import store_vectors
    from labelsd.store.engine import open_store
    from labelsd.vectors import codec
    from vectorkit import claim

    rng = np.random.default_rng(11)
    scene = rng.standard_normal(1280)
    features = {}
    for i, cat in enumerate(lib.cats):
        noise = 0.3 + 0.6 * i / len(lib.cats)
        features[cat] = np.maximum(scene * np.sqrt(1 - noise ** 2) + noise * rng.standard_normal(1280), 0) ** 2
    features[lib.cats[1]] = features[lib.cats[0]] * rng.uniform(0.97, 1.03, 1280)
    for other in (lib.dog, lib.car):
        features[other] = np.maximum(rng.standard_normal(1280), 0) ** 2
    wanted = [p for p in features if p not in skip]
    codes = codec.encode(np.stack([features[p] for p in wanted]))
    outcomes = [records.Outcome(claim(0), records.OutcomeKind.EMBEDDED, sha256=lib.sha(p),
                                model=VECTOR_MODEL, embedding=codec.to_bytes(code))
                for p, code in zip(wanted, codes)]
    store = open_store(lib.db)
    try:
        with store.write() as session:
            store_vectors(session, outcomes)
    finally:
        store.close()


class LibraryTemplate:
    """`open_library` built once (per test module) and copied back into place before
    each test that asks for it: every test starts from the same library, at the same
    paths, for the cost of copying a few small files instead of building it again.
    `then(lib)` adds to it before it is kept (add_vectors)."""

    def __init__(self, root: Path, cats: int = 6, then=None):
        self.work = root / "lib"
        self.saved = root / "saved"
        self.lib = open_library(self.work, cats=cats)
        if then is not None:
            then(self.lib)
        shutil.copytree(self.work, self.saved, symlinks=True)

    def fresh(self) -> Library:
        shutil.rmtree(self.work)
        shutil.copytree(self.saved, self.work, symlinks=True)
        return self.lib


def open_library(root: Path, cats: int = 6) -> Library:
    """`build_library` in a SQLite file of its own under `root`."""
    from labelsd.store.engine import open_store

    db = str(root / "labels.db")
    store = open_store(db)
    try:
        return build_library(store, db, root, cats=cats)
    finally:
        store.close()


def web_client(lib: Library, thumbs: Path, *, token: str | None = None, check_host: bool = True,
               host: str = "127.0.0.1:8470", **options):
    """A Starlette TestClient over `labels serve`'s application for `lib` (as a browser
    on `host` sees it); the caller closes it (`with`)."""
    from starlette.testclient import TestClient

    from labelsd.config import load_settings
    from labelsd.web.app import create_app
    from labelsd.web.site import ServeOptions, Site

    site = Site(load_settings(str(lib.config)), ServeOptions(**options), token,
                check_host=check_host, thumb_folder=thumbs)
    client = TestClient(create_app(site), base_url=f"http://{host}")
    client.site = site
    return client
