"""InceptionV3 (the default model): its input size, preprocessing and weights.

Weights files (the keras download, --weights, checks) are in `weights`; this
module builds the network. Keras is imported only in `build_network`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelsd.model import weights as weights_files
from labelsd.model.spec import ModelSpec, Network

INPUT_SIZE = 299


def preprocess_inception(rgb: np.ndarray) -> np.ndarray:
    """Keras ``inception_v3.preprocess_input`` ("tf" mode) in numpy: [0, 255] -> [-1, 1]."""
    return rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def check_weights(weights):
    """(path, layout, name) before TensorFlow is imported: a given file checked (and hashed
    for its name), else the official file in keras' cache, downloaded there once if missing
    (WeightsUnavailable when it cannot be, saying what to do)."""
    return weights_files.resolve_weights(weights)


def default_weights() -> Path:
    return weights_files.cached_weights_path()


def weights_info(weights) -> dict:
    return weights_files.weights_info(weights)


def how_to_get_weights() -> str:
    return weights_files.HOW_TO_GET_WEIGHTS


def build_network(weights, checked) -> Network:
    weights_files.keras_settings_ready()
    import keras

    path, layout, name = checked or weights_files.resolve_weights(weights)
    model = keras.applications.InceptionV3(weights=None, classifier_activation=None)
    weights_files.load_weights_into(model, path, layout)
    return Network(model=model, name=name, weights_path=str(path))


SPEC = ModelSpec(
    key="inception_v3",
    family="InceptionV3",
    input_size=INPUT_SIZE,
    preprocess=preprocess_inception,
    loader=__name__,
    describe="InceptionV3, 299x299: ImageNet top-1 77.9%, 5.7 G multiply-adds per image",
)


def identify(weights, checked) -> tuple[Path, str, str]:
    """(weights file, its checksum, the name its labels record) without Keras, for the
    converted-model cache. The official file's checksum is keras' md5."""
    path, _layout, name = checked or weights_files.resolve_weights(weights)
    checksum = weights_files.OFFICIAL_MD5 if name == weights_files.OFFICIAL_NAME else name.split("/")[1]
    return Path(path), checksum, name
