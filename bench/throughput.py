"""Throughput of `labels scan`'s pipeline against the seed's loop and the bare forward.

    .venv/bin/python bench/throughput.py [--quick] [--weights FILE] [--batch-size N]

Measures in ONE run, on the same phone-sized JPEGs (generated once, cached):
  (a) seed:     keras load_img(target_size=(299, 299)) + img_to_array +
                preprocess_input + model.predict, one image at a time;
  (b) pipeline: scan_folder on a fresh SQLite store (read, hash, decode, batch,
                classify, write), the classifier already loaded and warmed up;
  (c) bare:     the Classifier's compiled forward over pre-decoded batches.
Prints images/s for each and the ratios pipeline/seed and pipeline/bare.
Without --weights a random-weights InceptionV3 file is built (the ImageNet
weights cannot be downloaded everywhere); speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL_VS_SEED = 2.5
GOAL_VS_BARE = 0.9


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Camera-like JPEGs (smooth colour fields plus sensor-like noise, quality 90)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"IMG_{i:04}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC),
                          dtype=np.int16)
        noise = rng.integers(-12, 13, base.shape, dtype=np.int16)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        tmp = path.with_suffix(".tmp")
        Image.fromarray(pixels).save(tmp, "JPEG", quality=90)
        tmp.rename(path)
    return paths


def random_weights(folder: Path) -> Path:
    path = folder / "inception_v3_random.weights.h5"
    if not path.exists():
        import keras

        keras.utils.set_random_seed(1234)
        keras.applications.InceptionV3(weights=None).save_weights(path)
    return path


_seed_models: dict = {}


def bench_seed(weights: Path, photos: list[Path]) -> float:
    """The seed's loop: one image at a time through keras' own helpers."""
    import keras
    from keras.applications.inception_v3 import preprocess_input

    if weights not in _seed_models:
        model = keras.applications.InceptionV3(weights=None)
        model.load_weights(str(weights))
        _seed_models[weights] = model
    model = _seed_models[weights]

    def one(path: Path):
        img = keras.utils.load_img(path, target_size=(299, 299))
        x = preprocess_input(keras.utils.img_to_array(img)[None])
        return model.predict(x, verbose=0)

    one(photos[0])  # the first predict() builds the graph; not counted
    start = time.perf_counter()
    for path in photos:
        one(path)
    return len(photos) / (time.perf_counter() - start)


def bench_pipeline(classifier, photos: list[Path], batch_size: int, workdir: Path,
                   decode_workers: int) -> float:
    from labelsd.scan import scan_folder
    from labelsd.store import open_store

    with tempfile.TemporaryDirectory(dir=workdir) as tmp, open_store(f"{tmp}/labels.db") as store:
        start = time.perf_counter()
        result = scan_folder(store, classifier, photos[0].parent, batch_size=batch_size,
                             decode_workers=decode_workers)
        elapsed = time.perf_counter() - start
    if result.labeled != len(photos):
        sys.exit(f"pipeline labeled {result.labeled} of {len(photos)}: {result.summary()}")
    return len(photos) / elapsed


def bench_bare(classifier, photos: list[Path], batch_size: int) -> float:
    from labelsd.images import decode_for_inception

    pixels = np.stack([decode_for_inception(p.read_bytes()).pixels for p in photos])
    batches = []
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start:start + batch_size]
        size = classifier.padded_size(len(chunk))
        if size > len(chunk):
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]),
                                                    np.float32)])
        batches.append(chunk)
    start = time.perf_counter()
    for batch in batches:
        classifier.forward(batch)
    return len(photos) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="8 smaller (1600x1200) images: a smoke test for CI")
    parser.add_argument("--weights", type=Path, help="InceptionV3 weights file")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decode-workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--images", type=int, help="how many images (default 32, quick 8)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds, best kept (default 3, quick 1)")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "labelsd-bench",
                        help="where the generated photos and weights are kept between runs")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING)

    args.rounds = args.rounds or (1 if args.quick else 3)
    count = args.images or (8 if args.quick else 32)
    size = (1600, 1200) if args.quick else (4000, 3000)
    photos = make_photos(args.cache / f"photos-{size[0]}x{size[1]}-{count}", count, size)

    # The classifier first: its thread settings only apply before TensorFlow starts.
    from labelsd.model import load_classifier

    weights = args.weights or random_weights(args.cache)
    classifier = load_classifier(weights, device="cpu", batch_size=args.batch_size)
    cores = len(os.sched_getaffinity(0))
    print(f"{count} JPEGs {size[0]}x{size[1]}, batch size {args.batch_size}, "
          f"{cores} cores, device {classifier.device}", flush=True)

    # Rounds interleave the three, and each keeps its best round: on a shared
    # machine a neighbour's burst then penalises no one method.
    bare = pipeline = seed = 0.0
    for round_no in range(1, args.rounds + 1):
        bare = max(bare, bench_bare(classifier, photos, args.batch_size))
        pipeline = max(pipeline, bench_pipeline(classifier, photos, args.batch_size,
                                                args.cache, args.decode_workers))
        seed = max(seed, bench_seed(weights, photos))
        print(f"round {round_no}: best so far bare {bare:.2f}, pipeline {pipeline:.2f}, "
              f"seed {seed:.2f} img/s", flush=True)
    print(f"bare forward: {bare:6.2f} img/s")
    print(f"pipeline:     {pipeline:6.2f} img/s")
    print(f"seed loop:    {seed:6.2f} img/s")
    print(f"pipeline/seed {pipeline / seed:.2f}x (goal >= {GOAL_VS_SEED}x), "
          f"pipeline/bare {pipeline / bare:.2f}x (goal >= {GOAL_VS_BARE}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
