"""The classifier type the pipeline, `labels scan` and the benchmark depend on.

A `Classifier` is a model (`spec.ModelSpec`: name, input size, preprocessing,
default batch sizes) with a loaded runtime (`spec.Runtime`: Keras or LiteRT) behind
it: it decodes for its model, pads batches to its ladder, and answers top-3
ImageNet labels and, from the same forward pass, each image's pooled embedding
(`infer`). `load_classifier(model=...)` picks the model from the registry.

TensorFlow and Keras are imported only inside the functions that need them, so
`import labelsd.model.classifier` stays cheap and the CLI's query commands never pay for them.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from labelsd.errors import ConfigError
from labelsd.model.decode import DecodedImage
from labelsd.model.device import check_device, cpu_threads, describe_device
from labelsd.model.registry import get_model
from labelsd.model.spec import BATCH_SIZE_CPU, BATCH_SIZE_GPU, NUM_CLASSES, ModelSpec, Outputs, Runtime
from labelsd.records import Prediction

__all__ = ["BATCH_SIZE_CPU", "BATCH_SIZE_GPU", "Classifier", "batch_ladder", "cpu_threads",
           "describe_device", "load_classifier"]

log = logging.getLogger(__name__)


def batch_ladder(batch_size: int) -> tuple[int, ...]:
    """Padded batch sizes 1, 2, 4, ... batch_size: a few fixed shapes, so XLA never recompiles."""
    sizes, n = [], 1
    while n < batch_size:
        sizes.append(n)
        n *= 2
    sizes.append(batch_size)
    return tuple(sizes)


class Classifier:
    """A loaded model: decode for it, batch for it, top-3 from it. Use load_classifier()."""

    def __init__(self, spec: ModelSpec, runtime: Runtime, *, name: str, weights_path: str,
                 batch_size: int):
        self.spec = spec
        self.runtime = runtime
        self.name = name  # what its labels record: "InceptionV3/imagenet", ...
        self.weights_path = weights_path
        self.batch_size = batch_size
        # A runtime with static shapes compiles one program per batch size, so every
        # batch is padded up to a size in a short ladder and each compiles once, at warm-up.
        self.ladder = batch_ladder(batch_size) if runtime.static_shapes else None
        self.warm_sizes = self.ladder or tuple(sorted({1, batch_size}))
        self.warmup_s: float | None = None

    def __repr__(self) -> str:
        return f"Classifier({self.name!r}, device={self.device!r}, batch_size={self.batch_size})"

    @property
    def model_key(self) -> str:
        """The --model name: "inception_v3", "efficientnet_lite0"."""
        return self.spec.key

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def device(self) -> str:
        return self.runtime.device

    @property
    def on_gpu(self) -> bool:
        return self.runtime.on_gpu

    @property
    def jit_compile(self) -> bool:
        return self.runtime.static_shapes

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def embeds(self) -> bool:
        """Whether its forward gives the pooled embedding (every runtime labelsd builds
        does; a benchmark's "before" model does not): nothing to backfill without it."""
        return getattr(self.runtime, "embeds", True)

    @property
    def trace_count(self) -> int:
        """How many times the forward was traced; warm-up traces all there will be."""
        return self.runtime.trace_count

    def decode(self, data: bytes) -> DecodedImage:
        """Image bytes -> this model's input (its size, its preprocessing); ImageError if bad."""
        return self.spec.decode(data)

    def padded_size(self, n: int) -> int:
        return next(size for size in self.ladder if size >= n) if self.ladder else n

    def pad(self, chunk: np.ndarray) -> np.ndarray:
        """`chunk` (at most batch_size images) with zero rows up to padded_size."""
        size = self.padded_size(len(chunk))
        if size == len(chunk):
            return chunk
        return np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])

    def forward(self, padded: np.ndarray) -> Outputs:
        """The bare forward (for benchmarks); with a ladder, the size must be in it."""
        return self.runtime.forward(padded)

    def warm_up(self) -> float:
        """Trace/compile now, so the first real image pays nothing."""
        start = time.perf_counter()
        for size in self.warm_sizes:
            self.forward(np.zeros((size, *self.spec.input_shape), np.float32))
        self.warmup_s = time.perf_counter() - start
        return self.warmup_s

    def infer(self, batch: np.ndarray) -> Outputs:
        """Probabilities (n, 1000) and embeddings (n, F), float32, of preprocessed images
        (n, size, size, 3): one forward pass per batch_size images gives both."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != self.spec.input_shape:
            raise ValueError(f"expected images of shape (n, {self.input_size}, "
                             f"{self.input_size}, 3), got {x.shape}")
        probs = np.empty((len(x), NUM_CLASSES), np.float32)
        pooled = None
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            out = self.forward(self.pad(chunk))
            probs[start:start + len(chunk)] = out.probabilities[:len(chunk)]
            if out.embeddings is not None:
                if pooled is None:
                    pooled = np.empty((len(x), out.embeddings.shape[1]), np.float32)
                pooled[start:start + len(chunk)] = out.embeddings[:len(chunk)]
        return Outputs(probs, pooled)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (n, 1000) float32 for preprocessed images (n, size, size, 3)."""
        return self.infer(batch).probabilities

    def top3(self, batch: np.ndarray) -> list[list[Prediction]]:
        return self.top3_of(self.predict(batch))

    def classify(self, batch: np.ndarray) -> tuple[list[list[Prediction]], np.ndarray | None]:
        """What the pipeline asks of a batch: each image's top-3 and its pooled embedding
        (None from a runtime without one), from one forward pass."""
        out = self.infer(batch)
        return self.top3_of(out.probabilities), out.embeddings

    @staticmethod
    def top3_of(probs: np.ndarray) -> list[list[Prediction]]:
        """The three best classes of each row of probabilities, best first."""
        from labelsd.model.taxonomy import class_by_index

        results = []
        for row in probs:
            best = np.argsort(-row, kind="stable")[:3]
            preds = []
            for rank, index in enumerate(best, start=1):
                cls = class_by_index(int(index))
                preds.append(Prediction(rank=rank, label=cls.label, wnid=cls.wnid,
                                        class_index=int(index), score=float(row[index])))
            results.append(preds)
        return results


def load_classifier(weights: str | os.PathLike | None = None, device: str = "auto",
                    batch_size: int | None = None, mixed_precision: bool | None = None,
                    jit_compile: bool | None = None, warm: bool = True,
                    model: str | None = None) -> Classifier:
    """Load a model once (`model`: a registry name, default InceptionV3): weights from
    `weights` or the model's own source, on `device`, warmed up.

    batch_size None: the model's default for the device (8 on CPU, 32 on GPU).
    mixed_precision None: on for a GPU of compute capability >= 7, off on CPU.
    jit_compile None: XLA on GPU, off on CPU (it measured slower there).
    """
    spec = get_model(model)
    check_device(device)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}")
    from labelsd.model.keras_runtime import load_keras_runtime

    runtime, network = load_keras_runtime(spec, weights, device, mixed_precision=mixed_precision,
                                          jit_compile=jit_compile)
    if batch_size is None:
        batch_size = spec.default_batch_size(runtime.on_gpu)
    classifier = Classifier(spec, runtime, name=network.name, weights_path=network.weights_path,
                            batch_size=batch_size)
    if warm:
        log.info("warmed up batch sizes %s in %.1fs", classifier.warm_sizes, classifier.warm_up())
    return classifier
