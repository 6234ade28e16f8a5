"""The InceptionV3 classifier: device choice, one compiled forward per batch (weights files: weights.py).

TensorFlow and Keras are imported only inside the functions that need them, so
`import labelsd.model.classifier` stays cheap and the CLI's query commands never pay for them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

import numpy as np

from labelsd.config import DEVICES
from labelsd.errors import ConfigError, DeviceUnavailable
from labelsd.model.weights import load_weights_into, resolve_weights
from labelsd.records import Prediction

log = logging.getLogger(__name__)

# TensorFlow's C++ start-up chatter (oneDNN notes, "no CUDA drivers") is noise in a
# service log; real failures reach us as Python exceptions. A user can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _native_stderr_quiet():
    """TensorFlow >= 2.16 writes its start-up lines ("oneDNN custom operations are
    on", "failed call to cuInit") from C++ before its logging is initialised, so
    TF_CPP_MIN_LOG_LEVEL does not stop them; on a CPU-only machine the cuInit line
    even reads as an error. Point file descriptor 2 at /dev/null while TensorFlow
    starts (only then, in the loading thread, before the service starts its
    others), unless debug logging asks to see everything."""
    wanted = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    if log.isEnabledFor(logging.DEBUG) or not (wanted.isdigit() and int(wanted) >= 2):
        yield  # debugging, or the user asked for TensorFlow's notes: leave stderr alone
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


IMAGE_SIZE = 299
NUM_CLASSES = 1000

# XLA measured on a 2-core AVX-512 CPU (img/s, batch 1 / batch 8): quiet machine
# 12.4 / 13.6 without, 8.9 / 14.7 with; interleaved A/B on a loaded machine
# 4.7 / 3.6 without, 2.1 / 2.4 with; warm-up 9 s without vs 17 s with (quiet).
# So it is off on CPU. On GPU it is on (static shapes; not measured here).
JIT_ON_CPU = False
JIT_ON_GPU = True

# TensorFlow's inter-op threads on CPU; intra-op gets every core. 2-core AVX-512 CPU,
# img/s of bare forward (batch 8) / scan pipeline (32 12 MP JPEGs), one process each:
# intra 2 + inter 2: 8.9 / 5.5; intra 2 + inter 1: 13-16 / 8.6-9.9; intra 1 + inter 1:
# 8.6-8.9 / 6.1-7.5. Two inter-op threads running multi-threaded ops oversubscribe
# the cores. Decode threads at nice 10 gained nothing and left the model idle 10%.
INTER_OP_THREADS = 1

# Batch size when none is given: a GPU needs wide batches (the decode pool, one worker
# per core, feeds it); on a CPU 8 is as fast per image and a burst's first results come sooner.
BATCH_SIZE_CPU = 8
BATCH_SIZE_GPU = 32

# --------------------------------------------------------------------------- devices


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")


def _gpu_description(tf, gpu) -> tuple[str, tuple[int, int] | None]:
    details = tf.config.experimental.get_device_details(gpu)
    return details.get("device_name", "GPU"), details.get("compute_capability")


def describe_device(device: str = "auto") -> str:
    """The device `load_classifier(device=...)` would use, in words; initialises nothing."""
    _check_device(device)
    with _native_stderr_quiet():
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" or not gpus:
        if device == "gpu":
            raise DeviceUnavailable(_NO_GPU)
        return "cpu"
    return f"gpu:0 {_gpu_description(tf, gpus[0])[0]}"


_NO_GPU = (
    "--device gpu: no GPU is visible to TensorFlow (check that `nvidia-smi` lists one, "
    "that tensorflow[and-cuda] is installed (pip install 'labelsd[gpu]'), and that "
    "CUDA_VISIBLE_DEVICES does not hide it), or use --device auto or cpu"
)


def cpu_threads() -> tuple[int, int]:
    """TensorFlow's (intra-op, inter-op) threads on CPU, sized to the cores this process
    may use (its affinity: systemd's CPUAffinity=, taskset), not the machine's."""
    cores = len(os.sched_getaffinity(0))
    return cores, min(cores, INTER_OP_THREADS)


def _configure_device(tf, device: str):
    """Returns (tf device string, description, compute capability or None)."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise DeviceUnavailable(_NO_GPU)
    if gpus and device in ("auto", "gpu"):
        for gpu in gpus:
            try:  # the service shares the GPU: grow on demand instead of taking it all
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                log.debug("GPU already initialised; memory growth left as it was")
        name, cc = _gpu_description(tf, gpus[0])
        return "/GPU:0", f"gpu:0 {name}", cc
    intra, inter = cpu_threads()
    try:
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        # TensorFlow was already initialised in this process (e.g. a second
        # classifier); tf.device("/CPU:0") below still keeps the work on the CPU.
        log.debug("TensorFlow already initialised; CPU placement by tf.device only")
    return "/CPU:0", "cpu", None


# --------------------------------------------------------------------------- classifier


def batch_ladder(batch_size: int) -> tuple[int, ...]:
    """Padded batch sizes 1, 2, 4, ... batch_size: a few fixed shapes, so XLA never recompiles."""
    sizes, n = [], 1
    while n < batch_size:
        sizes.append(n)
        n *= 2
    sizes.append(batch_size)
    return tuple(sizes)


class Classifier:
    """A loaded InceptionV3 with one compiled forward per padded batch size. Use load_classifier()."""

    def __init__(self, model, *, name: str, device: str, weights_path: str, tf_device: str,
                 batch_size: int, jit_compile: bool, mixed_precision: str | None):
        import tensorflow as tf

        self.model = model
        self.name = name
        self.device = device
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.jit_compile = jit_compile
        self.mixed_precision = mixed_precision
        # XLA compiles one program per static shape, so with jit every batch is padded
        # up to a size in a short ladder and each size compiles once, at warm-up.
        # Without jit, one trace with a free batch dimension serves every size
        # (measured: later sizes cost no tracing), so nothing is padded.
        self.ladder = batch_ladder(batch_size) if jit_compile else None
        self.warm_sizes = self.ladder or tuple(sorted({1, batch_size}))
        self.warmup_s: float | None = None
        self._tf = tf
        self._tf_device = tf_device

        def forward(x):
            logits = model(x, training=False)
            # softmax in float32 even under mixed precision (the model outputs logits)
            return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

        if jit_compile:
            self.forward_fn = tf.function(forward, jit_compile=True)
        else:
            spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)
            self.forward_fn = tf.function(forward, input_signature=[spec])

    def __repr__(self) -> str:
        return f"Classifier({self.name!r}, device={self.device!r}, batch_size={self.batch_size})"

    @property
    def on_gpu(self) -> bool:
        return self._tf_device.startswith("/GPU")

    @property
    def trace_count(self) -> int:
        """How many times the forward was traced; warm-up traces all there will be."""
        return self.forward_fn.experimental_get_tracing_count()

    def padded_size(self, n: int) -> int:
        return next(size for size in self.ladder if size >= n) if self.ladder else n

    def pad(self, chunk: np.ndarray) -> np.ndarray:
        """`chunk` (at most batch_size images) with zero rows up to padded_size."""
        size = self.padded_size(len(chunk))
        if size == len(chunk):
            return chunk
        return np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])

    def forward(self, padded: np.ndarray) -> np.ndarray:
        """The bare compiled forward (for benchmarks); with jit, the size must be in self.ladder."""
        with self._tf.device(self._tf_device):
            return self.forward_fn(self._tf.constant(padded, dtype=self._tf.float32)).numpy()

    def warm_up(self) -> float:
        """Trace/compile now, so the first real image pays nothing."""
        start = time.perf_counter()
        for size in self.warm_sizes:
            self.forward(np.zeros((size, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))
        self.warmup_s = time.perf_counter() - start
        return self.warmup_s

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (n, 1000) float32 for preprocessed images (n, 299, 299, 3)."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"expected images of shape (n, 299, 299, 3), got {x.shape}")
        out = np.empty((len(x), NUM_CLASSES), np.float32)
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            out[start:start + len(chunk)] = self.forward(self.pad(chunk))[:len(chunk)]
        return out

    def top3(self, batch: np.ndarray) -> list[list[Prediction]]:
        from labelsd.model.taxonomy import class_by_index

        probs = self.predict(batch)
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
                    jit_compile: bool | None = None, warm: bool = True) -> Classifier:
    """Load InceptionV3 once: weights from `weights` or keras' cache, on `device`, warmed up.

    batch_size None: BATCH_SIZE_GPU on a GPU, BATCH_SIZE_CPU on CPU.
    mixed_precision None: on for a GPU of compute capability >= 7, off on CPU.
    jit_compile None: XLA on GPU, off on CPU (it measured slower there).
    """
    _check_device(device)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}")
    # A given file is checked (and hashed for its name) before importing TensorFlow, to
    # fail fast; without one, the keras cache is resolved after (fetching needs keras).
    resolved = resolve_weights(weights) if weights else None

    with _native_stderr_quiet():
        import keras
        import tensorflow as tf

        tf_device, description, cc = _configure_device(tf, device)
    on_gpu = tf_device.startswith("/GPU")
    path, layout, name = resolved or resolve_weights(None)
    if batch_size is None:
        batch_size = BATCH_SIZE_GPU if on_gpu else BATCH_SIZE_CPU

    if mixed_precision is None:
        mixed_precision = on_gpu and cc is not None and tuple(cc) >= (7, 0)
    # float16 where tensor cores take it; bfloat16 on CPUs (same range as float32)
    policy = ("mixed_float16" if on_gpu else "mixed_bfloat16") if mixed_precision else None
    if jit_compile is None:
        jit_compile = JIT_ON_GPU if on_gpu else JIT_ON_CPU

    start = time.perf_counter()
    previous = keras.mixed_precision.global_policy()
    try:
        if policy:
            keras.mixed_precision.set_global_policy(policy)
        with tf.device(tf_device):
            model = keras.applications.InceptionV3(weights=None, classifier_activation=None)
            load_weights_into(model, path, layout)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    log.info("loaded %s from %s on %s in %.1fs", name, path, description, time.perf_counter() - start)

    classifier = Classifier(model, name=name, device=description, weights_path=str(path),
                            tf_device=tf_device, batch_size=batch_size,
                            jit_compile=bool(jit_compile), mixed_precision=policy)
    if warm:
        log.info("warmed up batch sizes %s in %.1fs", classifier.warm_sizes, classifier.warm_up())
    return classifier
