"""The LiteRT runtime: a converted `.tflite` served by XNNPACK, with no TensorFlow in the process.

A `spec.Runtime` behind the same `Classifier` as the Keras runtime. Measured on a
2-core AMD EPYC (avx2, avx512_bf16, no AMX), loaded machine, InceptionV3: a fresh
process on LiteRT fp32 was ready in 1.5 s at 311 MiB RSS, int8 in 1.0 s at 164 MiB.
The interpreter keeps one free batch dimension: resizing it between 1 and the
batch size re-plans in under a millisecond (XNNPACK keeps its packed weights), so
nothing is padded and a single photo costs a batch-1 forward; a second interpreter
per size would pack the weights twice.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from labelsd.model.spec import NUM_CLASSES, Outputs

log = logging.getLogger(__name__)

# The most rows one invoke() runs; a larger batch runs in slices. XNNPACK keeps the
# activations of the largest batch it ran for the rest of the process: InceptionV3 fp32
# held 70 MiB more at batch 8 than at batch 1, 11 MiB more at batch 2, and ran as fast
# at 2 rows as at 8 (2-core EPYC, quiet: 37.8 vs 38.1 img/s; loaded: 17.3 vs 13.7).
# Dynamic-range int8 gained ~20% at 4-8 rows, and its process stays small anyway.
MAX_ROWS = {"float32": 2, "int8": 8}


def litert_available() -> bool:
    """Whether the `ai-edge-litert` runtime is installed (a dependency of labelsd)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ai_edge_litert") is not None
    except (ImportError, ValueError):
        return False


class LiteRTRuntime:
    """A `.tflite` (probabilities out, and the pooled embedding beside them) on LiteRT's
    CPU interpreter. A `spec.Runtime`. The outputs are told apart by their width (the
    probabilities have NUM_CLASSES; no model's pooled features have as many), so the
    order the converter gave them does not matter; a file with the probabilities only
    (a benchmark's "before" model) gives no embeddings."""

    kind = "litert"
    device = "cpu"
    on_gpu = False
    static_shapes = False  # a free batch dimension: no padding, no ladder
    trace_count = 0  # nothing is traced

    def __init__(self, tflite: Path, *, precision: str, threads: int | None = None,
                 source: str | None = None):
        """`source`: the path to load the file by, where it is not `tflite` (the converted
        model's checked descriptor: labelsd.model.convert.opened_tflite)."""
        from ai_edge_litert.interpreter import Interpreter

        self.precision = precision  # "float32" | "int8" (dynamic range)
        self.tflite_path = str(tflite)
        # Every core, also beside the pipeline's decoders: quiet 2-core EPYC, int8, 32 12 MP
        # photos through scan_folder, 0.89 of the decode-bound ceiling at 2 threads, 0.84 at 1
        # (1 thread won only while the machine was loaded by others).
        threads = threads or len(os.sched_getaffinity(0))
        self.threads = threads
        self._interpreter = Interpreter(model_path=source or str(tflite), num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]
        outputs = self._interpreter.get_output_details()
        probs = [o for o in outputs if int(o["shape"][-1]) == NUM_CLASSES]
        if len(probs) != 1 or len(outputs) > 2:
            raise ValueError(f"{tflite} has outputs {[list(o['shape']) for o in outputs]}, not "
                             f"probabilities ({NUM_CLASSES}) and an embedding")
        self._output = probs[0]
        self._embedding = next((o for o in outputs if o is not probs[0]), None)
        self.embeds = self._embedding is not None
        self.input_size = int(self._input["shape"][1])
        self.max_rows = MAX_ROWS.get(precision, 8)
        self._rows = 0
        self._lock = threading.Lock()  # one interpreter: one forward at a time

    def forward(self, batch: np.ndarray) -> Outputs:
        """Probabilities (n, 1000) and embeddings (n, F) for preprocessed images
        (n, size, size, 3), any n."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if len(x) <= self.max_rows:
            return self._invoke(x)
        slices = [self._invoke(x[i:i + self.max_rows]) for i in range(0, len(x), self.max_rows)]
        return Outputs(np.concatenate([s.probabilities for s in slices]),
                       None if self._embedding is None else np.concatenate([s.embeddings for s in slices]))

    def _invoke(self, x: np.ndarray) -> Outputs:
        with self._lock:
            if len(x) != self._rows:
                self._interpreter.resize_tensor_input(self._input["index"], list(x.shape))
                self._interpreter.allocate_tensors()
                self._rows = len(x)
            self._interpreter.set_tensor(self._input["index"], x)
            self._interpreter.invoke()
            probs = self._interpreter.get_tensor(self._output["index"]).copy()
            pooled = (None if self._embedding is None
                      else self._interpreter.get_tensor(self._embedding["index"]).copy())
            return Outputs(probs, pooled)
