"""Which runtime serves the model, at which precision: the one entry the service loads through.

- A GPU (`--device gpu`, or `auto` where an NVIDIA driver is present): TensorFlow, as
  the GPU path always was (batch 32, mixed float16 from compute capability 7, XLA).
- A CPU at fp32 or int8: LiteRT (XNNPACK) over a `.tflite` converted once in a child
  process (labelsd.model.convert), so TensorFlow is never imported here; TensorFlow
  instead where LiteRT is not installed or the conversion fails (said once, at INFO).
- A CPU at bf16: TensorFlow under `mixed_bfloat16` (oneDNN: AMX / AVX512-BF16).

`precision = auto` is decided by labelsd.model.precision.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from labelsd.config import DEVICES
from labelsd.errors import ConfigError, ConversionFailed
from labelsd.model import precision as precisions
from labelsd.model import weights as weights_files
from labelsd.model.classifier import BATCH_SIZE_CPU  # (no TensorFlow at import)
from labelsd.model.convert import LITERT_PRECISIONS, discard, ensure_tflite
from labelsd.model.litert import LiteRTClassifier, litert_available

log = logging.getLogger(__name__)

MODEL = "inception_v3"  # the one model the converter and the TF classifier build today


def gpu_possible() -> bool:
    """Whether TensorFlow could see a GPU, without importing it: an NVIDIA driver with a
    GPU, not hidden by CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def resolve(weights) -> tuple[Path, str, str, str]:
    """(path, layout, model name, sha256) of the weights to use, hashing the file once.
    Without a file named, keras' cache: fetched (with keras) only when it is not there."""
    if weights is None:
        cached = weights_files.cached_weights_path()
        if not cached.is_file():
            weights_files.fetch_weights()
        weights = cached
    path = Path(weights).expanduser().resolve()
    layout = weights_files.h5_layout(path)
    sha, md5 = weights_files._digests(path)
    if md5 == weights_files.OFFICIAL_MD5:
        name = weights_files.OFFICIAL_NAME
    elif path == weights_files.cached_weights_path().resolve():
        fetched = weights_files.fetch_weights()  # a damaged cache file: fetched again, or the error
        return resolve(fetched)
    else:
        name = f"InceptionV3/{sha[:12]}"
    return path, layout, name, sha


def load_model(weights=None, device: str = "auto", batch_size: int | None = None,
               precision: str = "auto", warm: bool = True):
    """The classifier the service runs: a LiteRTClassifier or a TensorFlow Classifier,
    each with `.runtime` ("litert" | "tensorflow") and `.precision` set."""
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    precisions.check_precision(precision)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}")
    if device == "gpu" or (device == "auto" and gpu_possible()):
        return _load_gpu(weights, device, batch_size, precision, warm)

    path, layout, name, sha = resolve(weights)
    batch_size = batch_size or BATCH_SIZE_CPU
    flags = precisions.cpu_flags()
    choice = precisions.choose_cpu_precision(
        precision, flags, lambda: precisions.measured_speeds(MODEL, batch_size, flags))
    classifier = None
    if choice.precision in LITERT_PRECISIONS:
        classifier = _load_litert(path, layout, name, sha, choice.precision, batch_size)
    if classifier is None:
        if choice.precision == "int8":
            log.warning("int8 runs on LiteRT only: TensorFlow runs the model at fp32 instead")
        classifier = _load_tensorflow(path, "cpu", batch_size, choice.precision == "bf16", warm=False)
    log.info("model %s: runtime %s, precision %s (%s)", name, classifier.runtime,
             classifier.precision, choice.reason)
    if warm:
        log.info("warmed up batch sizes %s in %.1fs", classifier.warm_sizes, classifier.warm_up())
    return classifier


def _load_litert(path: Path, layout: str, name: str, sha: str, precision: str,
                 batch_size: int) -> LiteRTClassifier | None:
    """The LiteRT classifier, or None (said once, at INFO) where TensorFlow must do."""
    if not litert_available():
        log.info("LiteRT is not installed (pip install 'labelsd[litert]'): TensorFlow runs the model")
        return None
    for attempt in (1, 2):
        try:
            tflite = ensure_tflite(path, layout, sha, MODEL, precision)
        except ConversionFailed as err:
            log.info("%s: TensorFlow runs the model", err)
            return None
        except OSError as err:  # the cache folder cannot be written
            log.info("cannot write the converted model (%s): TensorFlow runs the model", err)
            return None
        try:
            return LiteRTClassifier(tflite, name=name, precision=precision, weights_path=str(path),
                                    batch_size=batch_size)
        except (ValueError, RuntimeError) as err:  # LiteRT refuses the file: convert it again, once
            log.info("LiteRT cannot load %s (%s)%s", tflite, err,
                     ": converting again" if attempt == 1 else ": TensorFlow runs the model")
            discard(tflite)
    return None


def _load_tensorflow(path, device: str, batch_size: int | None, mixed_precision: bool | None, warm: bool):
    from labelsd.model.classifier import load_classifier

    classifier = load_classifier(path, device, batch_size, mixed_precision=mixed_precision, warm=warm)
    classifier.runtime = "tensorflow"
    classifier.precision = {None: "fp32", "mixed_bfloat16": "bf16",
                            "mixed_float16": "fp16"}[classifier.mixed_precision]
    return classifier


def _load_gpu(weights, device: str, batch_size: int | None, precision: str, warm: bool):
    """The GPU path as it was: TensorFlow, which falls back to the CPU under `auto` when it
    sees no GPU after all."""
    if precision in ("bf16", "int8"):
        raise ConfigError(f"--precision {precision} is for the CPU: on a GPU use auto "
                          "(mixed float16 where the GPU has tensor cores) or fp32, or --device cpu")
    mixed = None if precision == "auto" else False
    classifier = _load_tensorflow(weights, device, batch_size, mixed, warm)
    log.info("model %s: runtime tensorflow on %s, precision %s", classifier.name, classifier.device,
             classifier.precision)
    return classifier


def describe(classifier) -> str:
    """`cpu, litert int8` / `gpu:0 NVIDIA H200, tensorflow fp16`: where and how it runs."""
    return f"{classifier.device}, {classifier.runtime} {classifier.precision}"


def plan(device: str = "auto", precision: str = "auto", batch_size: int | None = None) -> dict:
    """What a service started with these settings would run, without loading or measuring
    anything: {"runtime", "precision", "why"} (for `labels model info`)."""
    precisions.check_precision(precision)
    if device == "gpu" or (device == "auto" and gpu_possible()):
        return {"runtime": "tensorflow",
                "precision": "mixed float16 where the GPU has compute capability 7" if precision == "auto"
                else precision, "why": "a GPU runs on TensorFlow"}
    flags = precisions.cpu_flags()
    batch_size = batch_size or BATCH_SIZE_CPU
    known = precisions.known_speeds(MODEL, batch_size, flags)
    if precision == "auto" and precisions.bf16_hardware(flags) and known is None:
        return {"runtime": "tensorflow (bf16) or " + ("litert" if litert_available() else "tensorflow")
                + " (fp32)", "precision": "bf16 or fp32",
                "why": f"auto: {precisions.bf16_hardware(flags)}; bf16 is measured against fp32 "
                       "at the service's first start"}
    choice = precisions.choose_cpu_precision(precision, flags, lambda: known)
    runtime = "litert" if choice.precision in LITERT_PRECISIONS and litert_available() else "tensorflow"
    why = choice.reason
    if choice.precision in LITERT_PRECISIONS and runtime == "tensorflow":
        why += "; LiteRT is not installed (pip install 'labelsd[litert]')"
    return {"runtime": runtime, "precision": "fp32" if runtime == "tensorflow" and choice.precision == "int8"
            else choice.precision, "why": why}
