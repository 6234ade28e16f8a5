"""The LiteRT runtime: a converted `.tflite` served by XNNPACK, with no TensorFlow in the process.

Measured on a 2-core AMD EPYC (avx2, avx512_bf16, no AMX), loaded machine, InceptionV3:
a fresh process with LiteRT fp32 was ready in 1.5 s at 311 MiB RSS, int8 in 1.0 s
at 164 MiB (TensorFlow: ~6 s and ~930 MiB). The interpreter keeps one free batch
dimension: resizing it between 1 and batch_size re-plans in under a millisecond
(XNNPACK keeps its packed weights), so nothing is padded and a single photo costs a
batch-1 forward; a second interpreter per size would pack the weights twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from labelsd.records import Prediction

log = logging.getLogger(__name__)

NUM_CLASSES = 1000


def litert_available() -> bool:
    """Whether the `ai-edge-litert` runtime is installed (pip install 'labelsd[litert]')."""
    import importlib.util

    try:
        return importlib.util.find_spec("ai_edge_litert") is not None
    except (ImportError, ValueError):
        return False


class LiteRTClassifier:
    """The same face as labelsd.model.classifier.Classifier, over a LiteRT interpreter."""

    runtime = "litert"
    on_gpu = False
    ladder = None  # a free batch dimension: no padding

    def __init__(self, tflite: Path, *, name: str, precision: str, weights_path: str,
                 batch_size: int, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.name = name
        self.precision = precision
        self.device = "cpu"
        self.weights_path = weights_path
        self.tflite_path = str(tflite)
        self.batch_size = batch_size
        # XNNPACK packs the weights at the first forward; other sizes then only re-plan
        self.warm_sizes = (1,)
        self.warmup_s: float | None = None
        threads = threads or len(os.sched_getaffinity(0))
        self._interpreter = Interpreter(model_path=str(tflite), num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.image_size = int(self._input["shape"][1])
        self._rows = 0
        self._lock = threading.Lock()  # one interpreter: one forward at a time

    def __repr__(self) -> str:
        return (f"LiteRTClassifier({self.name!r}, precision={self.precision!r}, "
                f"batch_size={self.batch_size})")

    def padded_size(self, n: int) -> int:
        return n

    def pad(self, chunk: np.ndarray) -> np.ndarray:
        return chunk

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (n, 1000) for preprocessed images (n, size, size, 3), n <= any."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            if len(x) != self._rows:
                self._interpreter.resize_tensor_input(self._input["index"], list(x.shape))
                self._interpreter.allocate_tensors()
                self._rows = len(x)
            self._interpreter.set_tensor(self._input["index"], x)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"]).copy()

    def warm_up(self) -> float:
        start = time.perf_counter()
        for size in self.warm_sizes:
            self.forward(np.zeros((size, self.image_size, self.image_size, 3), np.float32))
        self.warmup_s = time.perf_counter() - start
        return self.warmup_s

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        size = self.image_size
        if x.ndim != 4 or x.shape[1:] != (size, size, 3):
            raise ValueError(f"expected images of shape (n, {size}, {size}, 3), got {x.shape}")
        out = np.empty((len(x), NUM_CLASSES), np.float32)
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            out[start:start + len(chunk)] = self.forward(chunk)
        return out

    def top3(self, batch: np.ndarray) -> list[list[Prediction]]:
        from labelsd.model.taxonomy import class_by_index

        results = []
        for row in self.predict(batch):
            best = np.argsort(-row, kind="stable")[:3]
            results.append([
                Prediction(rank=rank, label=class_by_index(int(i)).label,
                           wnid=class_by_index(int(i)).wnid, class_index=int(i), score=float(row[i]))
                for rank, i in enumerate(best, start=1)])
        return results
