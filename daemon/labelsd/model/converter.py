"""The child that converts a model for LiteRT (`python -m labelsd.model.converter`): it
builds the Keras network with its weights, freezes its forward and writes the
`.tflite` for a precision into a file its parent made (labelsd.model.convert, which
keeps the cache and never imports TensorFlow). `precision = auto`'s measuring child
(labelsd.model.fidelity) converts through `convert_for_litert` too.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from labelsd.model import quantize
from labelsd.model.convert import LITERT_PRECISIONS


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
    from labelsd.model.device import configure_device, native_stderr_quiet, tensorflow_starting
    from labelsd.model.keras_runtime import with_embedding
    from labelsd.model.registry import get_model

    spec = get_model(model)
    checked = spec.check_weights(weights)
    with tensorflow_starting():
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
    out.write_bytes(from_float(data, precision))


def from_float(data: bytes, precision: str) -> bytes:
    """The file for `precision` from the float `.tflite`."""
    if precision == "int8":
        # Dynamic range (int8 weights, activations quantised on the fly) where it keeps
        # fp32's answers: see labelsd.model.quantize. Full int8 was slower and its softmax
        # could not hold small probabilities.
        return quantize.quantize_dynamic_range(data)
    return data


def convert_for_litert(weights: Path, model: str, make: dict[str, Path], converted: dict[str, Path]) -> None:
    """Every file of `make` ({precision: file}) from one conversion: the float file made
    (or taken from `converted`, files converted earlier) once, the others from it
    (`precision = auto` measures them all: labelsd.model.fidelity)."""
    float_file = make.get("fp32") or converted.get("fp32")
    if "fp32" in make:
        convert_in_this_process(weights, model, "fp32", make["fp32"])
    for precision, out in make.items():
        if precision == "fp32":
            continue
        if float_file is None:
            convert_in_this_process(weights, model, precision, out)
        else:
            out.write_bytes(from_float(float_file.read_bytes(), precision))


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m labelsd.model.converter",
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
