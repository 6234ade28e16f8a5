"""Which runtime serves the model, at which precision: the one entry the service loads through.

- A GPU (`--device gpu`, or `auto` where an NVIDIA driver is present): TensorFlow, as
  the GPU path always was (batch 32, mixed float16 from compute capability 7, XLA).
- A CPU at fp32 or int8: LiteRT (XNNPACK) over a `.tflite` converted once in a child
  process (labelsd.model.convert), so TensorFlow is never imported here; TensorFlow
  instead where LiteRT is not installed or the conversion fails (said once, at INFO).
- A CPU at bf16: TensorFlow under `mixed_bfloat16` (oneDNN: AMX / AVX512-BF16).

`precision = auto` is decided by labelsd.model.precision's rule on what labelsd.model.fidelity
measured (labelsd.model.automeasure keeps it beside the converted model).
"""

from __future__ import annotations

import logging
from pathlib import Path

from labelsd.errors import ConfigError, ConversionFailed, LabelsError
from labelsd.extras import install_command
from labelsd.model import automeasure
from labelsd.model import precision as precisions
from labelsd.model.classifier import Classifier, load_classifier
from labelsd.model.convert import LITERT_PRECISIONS, discard, opened_tflite
from labelsd.model.device import check_device, gpu_possible
from labelsd.model.litert import LiteRTRuntime, litert_available
from labelsd.model.registry import get_model
from labelsd.model.spec import ModelSpec
from labelsd.paths import shown

log = logging.getLogger(__name__)

# The Runtime's own precision names -> the setting's
PRECISION_WORDS = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16", "int8": "int8"}


def load_model(weights=None, device: str = "auto", batch_size: int | None = None,
               precision: str = "auto", warm: bool = True, model: str | None = None,
               threads: int | None = None) -> Classifier:
    """The classifier the service runs, its runtime LiteRT or Keras (see the module's doc).
    `threads`: LiteRT's (default: every core this process may use)."""
    spec = get_model(model)
    check_device(device)
    precisions.check_precision(precision)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}")
    if device == "gpu" or (device == "auto" and gpu_possible()):
        return _load_gpu(spec, weights, device, batch_size, precision, warm)

    checked = spec.check_weights(weights)  # before anything heavy: a bad file fails fast
    batch_size = batch_size or spec.batch_size_cpu
    flags = precisions.cpu_flags()
    choice = precisions.choose_cpu_precision(
        precision, flags, lambda: automeasure.measured(spec, weights, checked, batch_size, flags))
    classifier = None
    if choice.precision in LITERT_PRECISIONS:
        classifier = _load_litert(spec, weights, checked, choice.precision, batch_size, threads)
    if classifier is None:
        if choice.precision == "int8":
            log.warning("int8 runs on LiteRT only: TensorFlow runs the model at fp32 instead")
        classifier = load_classifier(weights, "cpu", batch_size, mixed_precision=choice.precision == "bf16",
                                     warm=False, model=spec.key)
    log.info("model %s: runtime %s, precision %s (%s)", classifier.name, runtime_kind(classifier),
             precision_word(classifier), choice.reason)
    # what `auto` measured, for `labels status` (registered_device); None where it measured nothing
    classifier.precision_choice = choice if precision_word(classifier) == choice.precision else None
    if warm:
        log.info("warmed up batch sizes %s in %.1fs", classifier.warm_sizes, classifier.warm_up())
    return classifier


def _load_litert(spec: ModelSpec, weights, checked, precision: str, batch_size: int,
                 threads: int | None = None) -> Classifier | None:
    """A Classifier on LiteRT, or None (said once, at INFO) where TensorFlow must do."""
    if not litert_available():
        log.info("LiteRT is not installed (%s): TensorFlow runs the model", install_command("litert"))
        return None
    path, checksum, name = spec.identify(weights, checked)
    for attempt in (1, 2):
        refused = None
        try:
            # LiteRT loads the very file that was checked (labelsd.owned), by `source`
            with opened_tflite(Path(path), checksum, spec.key, precision) as (tflite, source):
                try:
                    runtime = LiteRTRuntime(tflite, precision="float32" if precision == "fp32" else precision,
                                            threads=threads, source=source)
                except (ValueError, RuntimeError) as err:
                    refused = err
        except ConversionFailed as err:
            log.info("%s: TensorFlow runs the model", err)
            return None
        except OSError as err:  # the cache folder cannot be written
            log.info("cannot write the converted model (%s): TensorFlow runs the model", err)
            return None
        if refused is not None:  # LiteRT refuses the file: convert it again, once
            log.info("LiteRT cannot load %s (%s)%s", shown(tflite), refused,
                     ": converting again" if attempt == 1 else ": TensorFlow runs the model")
            discard(tflite)
            continue
        classifier = Classifier(spec, runtime, name=name, weights_path=str(path), batch_size=batch_size)
        # XNNPACK packs the weights at the first forward, and sizes its working memory
        # for the largest batch it has run: a first batch of a new largest size paid for
        # that in the first burst (int8: 12-14 ms an image at the first 4, 6 and 8
        # against 9 after). So the largest slice it will run (max_rows) is warmed too;
        # other sizes then only re-plan (< 1 ms). At rest the process holds what it
        # would after any burst.
        classifier.warm_sizes = tuple(sorted({1, min(classifier.batch_size, runtime.max_rows)}))
        return classifier
    return None


def _load_gpu(spec: ModelSpec, weights, device: str, batch_size: int | None, precision: str, warm: bool):
    """The GPU path as it was: Keras, which falls back to the CPU under `auto` when
    TensorFlow sees no GPU after all."""
    if precision in ("bf16", "int8"):
        raise ConfigError(f"--precision {precision} is for the CPU: on a GPU use auto "
                          "(mixed float16 where the GPU has tensor cores) or fp32, or --device cpu")
    classifier = load_classifier(weights, device, batch_size, mixed_precision=None if precision == "auto" else False,
                                 warm=warm, model=spec.key)
    log.info("model %s: runtime tensorflow on %s, precision %s", classifier.name, classifier.device,
             precision_word(classifier))
    return classifier


def runtime_kind(classifier: Classifier) -> str:
    return getattr(classifier.runtime, "kind", "tensorflow")


def precision_word(classifier: Classifier) -> str:
    return PRECISION_WORDS.get(classifier.precision, classifier.precision)


def describe(classifier: Classifier) -> str:
    """`cpu, litert int8` / `gpu:0 NVIDIA H200, tensorflow fp16`: where and how it runs."""
    return f"{classifier.device}, {runtime_kind(classifier)} {precision_word(classifier)}"


def registered_device(classifier: Classifier) -> str:
    """What a service registers for `labels status`: `describe`, and after it what `auto`
    measured where it chose by that (precision.with_note)."""
    return precisions.with_note(describe(classifier), getattr(classifier, "precision_choice", None))


def plan(device: str = "auto", precision: str = "auto", batch_size: int | None = None,
         model: str | None = None, weights=None) -> dict:
    """What a service started with these settings would run, without loading or measuring
    anything: {"runtime", "precision", "why", "auto"} (for `labels model info`); `auto` is
    the kept measurement's choice (precision.summary), None before the first start measured."""
    precisions.check_precision(precision)
    if device == "gpu" or (device == "auto" and gpu_possible()):
        return {"runtime": "tensorflow",
                "precision": "mixed float16 where the GPU has compute capability 7" if precision == "auto"
                else precision, "why": "a GPU runs on TensorFlow", "auto": None}
    flags = precisions.cpu_flags()
    spec = get_model(model)
    batch_size = batch_size or spec.batch_size_cpu
    known = None
    if precision == "auto":
        try:
            known = automeasure.known(spec, weights, None, batch_size, flags)  # never fetches
        except (LabelsError, OSError):  # no weights yet: nothing can have been measured for them
            known = None
        if known is None:
            lite = litert_available()
            measured = [p for p in precisions.candidates(flags) if lite or p != "int8"]
            return {"runtime": ("litert" if lite else "tensorflow") + (" or tensorflow (bf16)" if lite and
                                                                      "bf16" in measured else ""),
                    "precision": " or ".join(measured),
                    "why": f"auto: the service's first start measures {', '.join(measured)} on the fidelity set's "
                           "real photos and runs the fastest whose labels match fp32's", "auto": None}
    choice = precisions.choose_cpu_precision(precision, flags, lambda: known)
    runtime = "litert" if choice.precision in LITERT_PRECISIONS and litert_available() else "tensorflow"
    why = choice.reason
    if choice.precision in LITERT_PRECISIONS and runtime == "tensorflow":
        why += f"; LiteRT is not installed ({install_command('litert')})"
    return {"runtime": runtime, "precision": "fp32" if runtime == "tensorflow" and choice.precision == "int8"
            else choice.precision, "why": why, "auto": precisions.summary(choice)}
