"""The model boundary: what the pipeline, `labels scan` and the benchmark may know of a model.

A `ModelSpec` declares one model (its `--model` name, input size, preprocessing,
default batch sizes, how its weights are found and its network built); the
registry (`labelsd.model.registry`) names them. A loaded model is a
`classifier.Classifier`: the spec, plus a `Runtime` that runs the forward pass
(Keras today; another runtime or precision sits behind the same `Runtime`).
Nothing outside `labelsd.model` reads a model's constants directly.

No TensorFlow here: the decode threads call `ModelSpec.decode`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from labelsd.model.decode import DecodedImage, decode_image

NUM_CLASSES = 1000  # ImageNet-1k, in the order of labelsd.model.taxonomy

# Batch size when none is given: a GPU needs wide batches (the decode pool, one worker
# per core, feeds it); on a CPU 8 is as fast per image and a burst's first results come sooner.
BATCH_SIZE_CPU = 8
BATCH_SIZE_GPU = 32


@dataclass(frozen=True)
class Network:
    """A built network with its weights, as a loader returns it to `load_classifier`."""

    model: Any  # the framework's model object (a keras.Model for the Keras runtime)
    name: str  # what labels record: "<family>/<weights>", e.g. "InceptionV3/imagenet"
    weights_path: str


@dataclass(frozen=True)
class ModelSpec:
    """One model: everything about it the rest of labelsd may depend on."""

    key: str  # the --model / `model =` value, e.g. "inception_v3"
    family: str  # the first part of every name its labels record, e.g. "InceptionV3"
    input_size: int  # square input side, in pixels
    preprocess: Callable[[np.ndarray], np.ndarray]  # uint8 RGB (s, s, 3) -> float32 input
    # The module with its `check_weights(weights)` (runs before TensorFlow is imported:
    # a bad --weights file fails fast) and `build_network(weights, checked)` (imports
    # Keras; called under the runtime's device and precision), imported when loading.
    loader: str
    describe: str = ""  # one line for `--help` and the README
    batch_size_cpu: int = BATCH_SIZE_CPU
    batch_size_gpu: int = BATCH_SIZE_GPU

    def decode(self, data: bytes) -> DecodedImage:
        """Image bytes -> this model's input; raises ImageError with the reason."""
        return decode_image(data, self.input_size, self.preprocess)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, 3)

    def default_batch_size(self, on_gpu: bool) -> int:
        return self.batch_size_gpu if on_gpu else self.batch_size_cpu

    def owns(self, name: str | None) -> bool:
        """Whether a stored label's model name (Content.model) came from this model."""
        return bool(name) and name.split("/", 1)[0] == self.family

    def check_weights(self, weights) -> Any:
        """Check a given weights file before TensorFlow loads; what it returns goes to
        `build_network`. Raises WeightsUnavailable with what to do."""
        return self._loader().check_weights(weights)

    def build_network(self, weights, checked) -> Network:
        return self._loader().build_network(weights, checked)

    def default_weights(self) -> Path:
        """The file this model runs when no weights are given, where it is or would be:
        looked up, never fetched (WeightsUnavailable where it cannot even be named)."""
        return self._loader().default_weights()

    def weights_info(self, weights) -> dict:
        """Where this model's weights are and what they are (path, source, exists, size,
        sha256, official), without TensorFlow: `labels model info`."""
        return self._loader().weights_info(weights)

    def weights_hint(self) -> str:
        """How to get this model's weights, in words (when `weights_info` finds none)."""
        return self._loader().how_to_get_weights()

    def identify(self, weights, checked) -> tuple[Any, str, str]:
        """(weights file, its checksum, the name labels record), without Keras: what a
        converted model (labelsd.model.convert) is cached under."""
        return self._loader().identify(weights, checked)

    def _loader(self):
        import importlib

        return importlib.import_module(self.loader)


class Outputs(NamedTuple):
    """What one forward pass gives, both from the same pass."""

    probabilities: np.ndarray  # (n, NUM_CLASSES) float32, softmax in float32
    # (n, F) float32: the pooled features the classifier reads (its last layer's input:
    # 2048 for InceptionV3, 1280 for EfficientNet-Lite0), the photo's embedding;
    # None from a runtime built without them (a benchmark's "before" model)
    embeddings: np.ndarray | None


class Runtime(Protocol):
    """What runs a model's forward pass for a `Classifier` (keras_runtime.KerasRuntime,
    litert.LiteRTRuntime).

    `forward` takes a float32 batch of inputs whose size is one the runtime accepts
    (with `static_shapes`, the Classifier pads every batch to a size in its ladder)
    and returns `Outputs`: the probabilities and the pooled embedding of the same pass.
    A network's last layer is its classifier (a Dense over the pooled features, whose
    input is the embedding): every model's `build_network` keeps that shape.
    """

    device: str  # in words: "cpu", "gpu:0 NVIDIA ..."
    on_gpu: bool
    static_shapes: bool  # True: every distinct batch size compiles once (pad to a ladder)
    precision: str  # "float32", "mixed_bfloat16", "mixed_float16", ...

    def forward(self, padded: np.ndarray) -> Outputs: ...

    @property
    def trace_count(self) -> int: ...
