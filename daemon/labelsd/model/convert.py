"""The Keras model converted to a `.tflite` once, for LiteRT, and kept next to its weights.

Converting needs TensorFlow, and a process that has imported TensorFlow keeps its
~600 MiB; so the conversion runs in a child process (`python -m
labelsd.model.convert`), and the service that asked for it never imports
TensorFlow. The result is cached next to the weights file (or, where that folder is
not writable, in the user's cache), named by the weights' file name, the model,
the precision and the weights' checksum (SHA-256; keras' MD5 for the official
InceptionV3 file, which keras verifies by it); a JSON file beside it records what it was
made from and its own SHA-256. A cached file is used only when that record matches
(same weights checksum, model, precision, CONVERSION_FORMAT and the precision's recipe,
RECIPES) and the file's bytes hash to what it says: a truncated or corrupt file, a leftover of an older
conversion, or a file without its record is converted again. A new conversion
removes the files it made earlier for other checksums of the same weights file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import platformdirs

from labelsd.errors import ConversionFailed
from labelsd.fileio import file_sha256
from labelsd.model import digests, quantize

log = logging.getLogger(__name__)

# Bump when the converted graph changes (ops, output, quantisation), so older files are redone.
# 2: the pooled embedding is a second output, beside the probabilities (which stay first).
CONVERSION_FORMAT = 2
CONVERT_TIMEOUT_S = 1800  # a 2-core machine under load took ~1 min for fp32 InceptionV3
LITERT_PRECISIONS = ("fp32", "int8")  # int8: dynamic-range (int8 weights, float activations)
# How each precision is made, recorded with the file: a file made by another recipe (the
# int8 of an older labelsd: TensorFlow's Optimize.DEFAULT) is converted again. fp32 is
# the plain conversion, recorded as no recipe, as it was before recipes were recorded.
RECIPES = {"fp32": None, "int8": quantize.RECIPE}


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def _inside_python(path: Path) -> bool:
    """Whether `path` lies in this Python's installation (weights a package ships)."""
    try:
        path.resolve().relative_to(Path(sys.prefix).resolve())
    except ValueError:
        return False
    return True


def cache_folder(weights_path: Path) -> Path:
    """Next to the weights where that folder is writable, else the user's cache; never
    inside an installed package (pip would neither know nor remove the file)."""
    if _writable(weights_path.parent) and not _inside_python(weights_path.parent):
        return weights_path.parent
    return Path(platformdirs.user_cache_dir("labels")) / "tflite"


def cache_paths(weights_path: Path, checksum: str, model: str, precision: str) -> tuple[Path, Path]:
    """(the .tflite, its JSON record) for these weights, model and precision."""
    stem = f"{weights_path.name}.{model}.{precision}"
    tflite = cache_folder(weights_path) / f"{stem}.{checksum[:16]}.tflite"
    return tflite, tflite.with_name(tflite.name + ".json")


def _record(checksum: str, model: str, precision: str) -> dict:
    return {"format": CONVERSION_FORMAT, "weights_checksum": checksum, "model": model,
            "precision": precision, "recipe": RECIPES[precision]}


def cached_tflite(weights_path: Path, checksum: str, model: str, precision: str) -> Path | None:
    """The cached .tflite when it is whole and was made from these weights, else None."""
    tflite, meta = cache_paths(weights_path, checksum, model, precision)
    if not tflite.is_file():
        return None
    try:
        record = json.loads(meta.read_text())
    except (OSError, ValueError):
        log.info("cached %s has no readable record: converting again", tflite.name)
        return None
    want = _record(checksum, model, precision)
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in want.items()):
        log.info("cached %s was made from other weights or by another recipe (an older "
                 "labelsd): converting again", tflite.name)
        return None
    if record.get("tflite_size") != tflite.stat().st_size or record.get("tflite_sha256") != digests.remembered(
            tflite, "sha256", lambda path: {"sha256": file_sha256(path)})["sha256"]:
        log.info("cached %s is damaged (its checksum does not match): converting again", tflite.name)
        return None
    return tflite


def discard(tflite: Path) -> None:
    """Remove a cached file and its record (e.g. when LiteRT cannot load it)."""
    for path in (tflite, tflite.with_name(tflite.name + ".json")):
        path.unlink(missing_ok=True)


def ensure_tflite(weights_path: Path, checksum: str, model: str, precision: str) -> Path:
    """The .tflite for these weights: the cached one, or converted now in a child process."""
    if precision not in LITERT_PRECISIONS:
        raise ConversionFailed(f"no LiteRT conversion for precision {precision!r}")
    found = cached_tflite(weights_path, checksum, model, precision)
    if found:
        return found
    tflite, _ = cache_paths(weights_path, checksum, model, precision)
    tflite.parent.mkdir(parents=True, exist_ok=True)
    # Services started together (several nodes on one machine) convert once: the others
    # wait on the lock and then find the file.
    with open(tflite.with_name(f".{tflite.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return cached_tflite(weights_path, checksum, model, precision) or _convert(
            weights_path, checksum, model, precision)


def _convert(weights_path: Path, checksum: str, model: str, precision: str) -> Path:
    tflite, meta = cache_paths(weights_path, checksum, model, precision)
    tmp = tflite.with_name(f".{tflite.name}.{os.getpid()}.tmp")
    cmd = [sys.executable, "-m", "labelsd.model.convert", "--weights", str(weights_path),
           "--model", model, "--precision", precision, "--out", str(tmp)]
    log.info("converting %s to a %s .tflite for LiteRT (once; TensorFlow runs in a child "
             "process)", weights_path.name, precision)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        tmp.unlink(missing_ok=True)
        raise ConversionFailed(f"converting to .tflite took over {CONVERT_TIMEOUT_S} s") from err
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise ConversionFailed(f"converting to .tflite failed (exit {proc.returncode}: "
                               f"{lines[-1][:300] if lines else 'no output'})")
    record = _record(checksum, model, precision)
    record.update(tflite_size=tmp.stat().st_size, tflite_sha256=file_sha256(tmp))
    tmp.replace(tflite)
    meta_tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    meta_tmp.write_text(json.dumps(record, indent=1))
    meta_tmp.replace(meta)  # last: a file without its record is never taken as good
    _remove_stale(tflite, weights_path, model, precision)
    log.info("converted in %.0f s: %s (%.0f MB)", time.perf_counter() - start, tflite,
             record["tflite_size"] / 1e6)
    return tflite


def _remove_stale(current: Path, weights_path: Path, model: str, precision: str) -> None:
    """Files made earlier from other contents of the same weights file."""
    for old in current.parent.glob(f"{weights_path.name}.{model}.{precision}.*.tflite"):
        if old != current:
            log.info("removing %s (made from an earlier version of %s)", old.name, weights_path.name)
            discard(old)


# --------------------------------------------------------------------------- the child


def convert_in_this_process(weights: Path, model: str, precision: str, out: Path,
                            embedding: bool = True) -> None:
    """Build the model (labelsd.model.registry) with its weights, freeze its forward
    (softmax in float32 included, as the Keras runtime does) and convert it. Its
    outputs: the probabilities first, then the pooled embedding of the same pass
    (keras_runtime.with_embedding); `embedding=False` (benchmarks only: the model as
    it was before embeddings) leaves the second out.

    The variables are folded into constants first: converting the live Keras 3 model
    (from_keras_model, or a SavedModel of it) gave a file without its weights (308 KB
    for InceptionV3 under TensorFlow 2.21) whose outputs were all zero."""
    from labelsd.model.device import configure_device, native_stderr_quiet
    from labelsd.model.keras_runtime import with_embedding
    from labelsd.model.registry import get_model

    spec = get_model(model)
    checked = spec.check_weights(weights)
    with native_stderr_quiet():
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        configure_device(tf, "cpu")
    net = with_embedding(spec.build_network(weights, checked).model)

    @tf.function(input_signature=[tf.TensorSpec([None, *spec.input_shape], tf.float32)])
    def forward(x):
        logits, pooled = net(x, training=False)
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return (probs, tf.cast(pooled, tf.float32)) if embedding else probs

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    with native_stderr_quiet():
        data = converter.convert()
    if precision == "int8":
        # Dynamic range (int8 weights, activations quantised on the fly) where it keeps
        # fp32's answers: see labelsd.model.quantize. Full int8 was slower and its softmax
        # could not hold small probabilities.
        data = quantize.quantize_dynamic_range(data)
    out.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m labelsd.model.convert",
                                description="Convert a model's weights to a .tflite (LiteRT).")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--model", default="inception_v3")
    p.add_argument("--precision", choices=LITERT_PRECISIONS, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        convert_in_this_process(args.weights, args.model, args.precision, args.out)
    except Exception as err:  # noqa: BLE001 (the parent reads the last line and falls back to TensorFlow)
        args.out.unlink(missing_ok=True)
        print(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
