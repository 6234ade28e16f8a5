"""The recipes that keep bf16 and int8 faithful to fp32 (their fidelity on real photos is in
test_precision.py): which layers int8 quantises and which bf16 rounds, and that a model
converted or measured by an older recipe is not taken for one of today's."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from labelsd.model import convert, quantize


def _tiny_model():
    """One layer of each kind the recipes tell apart (the dot product's length in brackets)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    x = inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="first")(x)           # 27 terms: float
    x = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)  # 9 terms: float
    x = layers.Conv2D(160, 1, name="widen")(x)                          # 8 terms: float
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(16, 3, padding="same", name="long")(x)            # 1440 terms: int8
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(200, name="fc_short")(x)                           # 16 terms: float
    outputs = layers.Dense(4, name="fc_long")(x)                        # 200 terms: int8
    return keras.Model(inputs, outputs)


def _float_tflite(model) -> bytes:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()


def _interpreter(data: bytes, batch: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=1)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [batch, 8, 8, 3])
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, x):
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


@pytest.mark.tf
def test_int8_quantises_long_dot_products_only():
    pytest.importorskip("ai_edge_litert")
    model = _tiny_model()
    data = _float_tflite(model)
    quantised = quantize.quantize_dynamic_range(data)
    interpreter = _interpreter(quantised, 2)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    weights = [(op["op_name"], tensors[op["inputs"][1]]) for op in interpreter._get_ops_details()
               if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    kinds = [(name, t["dtype"].__name__, int(np.prod(t["shape"][1:]))) for name, t in weights]
    assert kinds == [("CONV_2D", "float32", 27), ("DEPTHWISE_CONV_2D", "float32", 72),
                     ("CONV_2D", "float32", 8), ("CONV_2D", "int8", 1440),
                     ("FULLY_CONNECTED", "float32", 16), ("FULLY_CONNECTED", "int8", 200)]
    # symmetric, one scale per output channel, each weight within half a step of the float one
    long_conv = dict(zip([layer.name for layer in model.layers], model.layers))["long"]
    kernel = np.transpose(long_conv.get_weights()[0], (3, 0, 1, 2))  # HWIO -> OHWI, as stored
    tensor = weights[3][1]
    scales = tensor["quantization_parameters"]["scales"]
    assert len(scales) == 16 and not tensor["quantization_parameters"]["zero_points"].any()
    stored = interpreter.get_tensor(tensor["index"]).astype(np.float32) * scales[:, None, None, None]
    assert np.abs(stored - kernel).max() <= scales.max() / 2 + 1e-6
    assert np.abs(interpreter.get_tensor(tensor["index"])).max() == 127
    # and it answers as the float model does, give or take the rounding
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    want = _run(_interpreter(data, 2), x)
    got = _run(interpreter, x)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max() and not np.array_equal(got, want)
    # nothing long enough: nothing quantised, the file as it was
    untouched = quantize.quantize_dynamic_range(data, min_dot_length=10**6)
    np.testing.assert_array_equal(_run(_interpreter(untouched, 2), x), want)


@pytest.mark.tf
def test_bf16_rounds_the_convolutions_after_the_first_only():
    import keras

    from labelsd.model.keras_runtime import keep_float32_outside_convs

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _tiny_model()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keep_float32_outside_convs(model) == 2
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert {name for name, p in policies.items() if p == "mixed_bfloat16"} == {"widen", "long"}
    assert set(policies.values()) == {"mixed_bfloat16", "float32"}
    x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    out = model(x, training=False)
    assert out.dtype == "float32"  # the logits come out of a float32 layer


class _Child:
    """Stands in for the converting child: writes `payload` where it was told to."""

    def __init__(self, payload: bytes):
        self.payload, self.calls = payload, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        with open(cmd[cmd.index("--out") + 1], "wb") as out:
            out.write(self.payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.mark.parametrize("recipe", [None, "dynamic-range int8: TensorFlow's Optimize.DEFAULT"])
def test_int8_converted_by_an_older_recipe_is_converted_again(tmp_path, monkeypatch, caplog, recipe):
    weights = tmp_path / "efficientnet-lite0.pth"
    weights.write_bytes(b"weights")
    sha = "ab" * 32
    tflite, meta = convert.cache_paths(weights, sha, "efficientnet_lite0", "int8")
    tflite.write_bytes(b"made by the old recipe")
    record = {"format": convert.CONVERSION_FORMAT, "weights_checksum": sha, "model": "efficientnet_lite0",
              "precision": "int8", "tflite_size": tflite.stat().st_size,
              "tflite_sha256": convert.file_sha256(tflite)}
    if recipe:
        record["recipe"] = recipe
    meta.write_text(json.dumps(record))  # whole, from these weights: only the recipe differs
    assert convert.cached_tflite(weights, sha, "efficientnet_lite0", "int8") is None
    child = _Child(b"made by today's recipe")
    monkeypatch.setattr(convert.subprocess, "run", child)
    with caplog.at_level("INFO"):
        assert convert.ensure_tflite(weights, sha, "efficientnet_lite0", "int8") == tflite
    assert len(child.calls) == 1 and "another recipe" in caplog.text
    assert tflite.read_bytes() == b"made by today's recipe"
    assert json.loads(meta.read_text())["recipe"] == quantize.RECIPE
    # and today's file is then used as it is
    monkeypatch.setattr(convert.subprocess, "run", _Child(b"never"))
    assert convert.ensure_tflite(weights, sha, "efficientnet_lite0", "int8") == tflite
    assert tflite.read_bytes() == b"made by today's recipe"


def test_fp32_converted_before_recipes_were_recorded_is_still_used(tmp_path, monkeypatch):
    """fp32's conversion did not change: its files from an older labelsd are kept."""
    weights = tmp_path / "inception_v3.weights.h5"
    weights.write_bytes(b"weights")
    sha = "cd" * 32
    tflite, meta = convert.cache_paths(weights, sha, "inception_v3", "fp32")
    tflite.write_bytes(b"fp32, converted before")
    meta.write_text(json.dumps({"format": convert.CONVERSION_FORMAT, "weights_checksum": sha,
                                "model": "inception_v3", "precision": "fp32",
                                "tflite_size": tflite.stat().st_size,
                                "tflite_sha256": convert.file_sha256(tflite)}))
    monkeypatch.setattr(convert.subprocess, "run", _Child(b"never"))
    assert convert.ensure_tflite(weights, sha, "inception_v3", "fp32") == tflite
    assert tflite.read_bytes() == b"fp32, converted before"
