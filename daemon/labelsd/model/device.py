"""Which device TensorFlow runs on, and its threads; TensorFlow's start-up quieted.

TensorFlow is imported only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from labelsd.config import DEVICES
from labelsd.errors import ConfigError, DeviceUnavailable
from labelsd.extras import install_command

log = logging.getLogger(__name__)

# TensorFlow's C++ start-up chatter (oneDNN notes, "no CUDA drivers") is noise in a
# service log; real failures reach us as Python exceptions. A user can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# TensorFlow's inter-op threads on CPU; intra-op gets every core. 2-core AVX-512 CPU,
# img/s of bare forward (batch 8) / scan pipeline (32 12 MP JPEGs), one process each:
# intra 2 + inter 2: 8.9 / 5.5; intra 2 + inter 1: 13-16 / 8.6-9.9; intra 1 + inter 1:
# 8.6-8.9 / 6.1-7.5. Two inter-op threads running multi-threaded ops oversubscribe
# the cores. Decode threads at nice 10 gained nothing and left the model idle 10%.
INTER_OP_THREADS = 1


@contextlib.contextmanager
def native_stderr_quiet():
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


@contextlib.contextmanager
def tensorflow_starting():
    """Around `import tensorflow` (which imports keras): keras' settings made the
    service's alone first (labelsd.model.weights.keras_settings_ready), and TensorFlow's
    native start-up chatter quiet."""
    from labelsd.model.weights import keras_settings_ready

    keras_settings_ready()
    with native_stderr_quiet():
        yield


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")


def gpu_possible() -> bool:
    """Whether TensorFlow could see a GPU, without importing it: an NVIDIA driver with a
    GPU, not hidden by CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def _gpu_description(tf, gpu) -> tuple[str, tuple[int, int] | None]:
    details = tf.config.experimental.get_device_details(gpu)
    return details.get("device_name", "GPU"), details.get("compute_capability")


def describe_device(device: str = "auto") -> str:
    """The device `load_classifier(device=...)` would use, in words; initialises nothing.
    Without a GPU driver TensorFlow cannot see one: say so without importing it."""
    check_device(device)
    if device == "cpu" or not gpu_possible():
        if device == "gpu":
            raise DeviceUnavailable(_no_gpu())
        return "cpu"
    with tensorflow_starting():
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" or not gpus:
        if device == "gpu":
            raise DeviceUnavailable(_no_gpu())
        return "cpu"
    return f"gpu:0 {_gpu_description(tf, gpus[0])[0]}"


def _no_gpu() -> str:
    return ("--device gpu: no GPU is visible to TensorFlow (check that `nvidia-smi` lists one, "
            f"that tensorflow[and-cuda] is installed ({install_command('gpu')}), and that "
            "CUDA_VISIBLE_DEVICES does not hide it), or use --device auto or cpu")


def cpu_threads() -> tuple[int, int]:
    """TensorFlow's (intra-op, inter-op) threads on CPU, sized to the cores this process
    may use (its affinity: systemd's CPUAffinity=, taskset), not the machine's."""
    cores = len(os.sched_getaffinity(0))
    return cores, min(cores, INTER_OP_THREADS)


def configure_device(tf, device: str):
    """Returns (tf device string, description, compute capability or None)."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise DeviceUnavailable(_no_gpu())
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
