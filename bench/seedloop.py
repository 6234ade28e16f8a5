"""The seed's loop (keras load_img + preprocess_input + model.predict, one image at a
time), the figure every throughput goal is set against; run in a fresh process with
TensorFlow's default threads, as it shipped (`python bench/seedloop.py WEIGHTS FOLDER`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_seed_models: dict = {}


def forget_seed_models() -> None:
    """Let the seed's Keras models go (the service measured next needs the memory)."""
    _seed_models.clear()


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


def bench_seed_shipped(weights: Path, photos: list[Path]) -> float:
    """The seed's loop in a fresh process with TensorFlow's default threads, as it
    shipped (this process runs TensorFlow with labelsd's thread settings)."""
    import subprocess

    proc = subprocess.run([sys.executable, __file__, str(weights), str(photos[0].parent)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"seed subprocess failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])




if __name__ == "__main__":
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(bench_seed(Path(sys.argv[1]), sorted(Path(sys.argv[2]).glob("*.jpg"))))
