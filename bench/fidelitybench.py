"""Fidelity rows for bench/throughput.py: each precision against TensorFlow fp32 on real
photos, beside its speed, and the first recipes beside today's.

Real photos: scikit-image's 23 bundled pictures (tests/test_precision.py's), several of
them near-ties at fp32. Agreement needs real weights (random ones put every picture in
one class): EfficientNet-Lite0's ImageNet weights (its package, installed with
labelsd), and InceptionV3 where the bench was given its ImageNet weights. With
the bench's random InceptionV3 weights its rows give the speeds only.

For every model: TensorFlow fp32 (the reference), each precision as the service loads it
(labelsd.model.runtime), and the first recipes, which rounded more and which today's
replace: bf16 with every layer in bfloat16 (Keras' global `mixed_bfloat16`) and int8 from
TensorFlow's converter (`Optimize.DEFAULT`: every convolution of 1024 weights or more,
depthwise ones included). Per row: the forward over the pictures (interleaved rounds,
best kept) and its ratio to TensorFlow fp32, top-1 agreement, the smallest top-3
overlap, and the noise (the standard deviation of the log-probabilities' error).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

REAL_PICTURES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
                 "motorcycle_right.png", "rocket.jpg", "camera.png", "coins.png", "moon.png",
                 "hubble_deep_field.jpg", "retina.jpg", "clock_motion.png", "page.png", "text.png",
                 "brick.png", "grass.png", "gravel.png", "color.png", "ihc.png", "cell.png",
                 "horse.png", "logo.png", "phantom.png")
NEAR_TIE = 0.005  # a top-1 that leads its runner-up by less than this at fp32


def real_pictures() -> list[bytes]:
    """The pictures' bytes, or [] without scikit-image."""
    try:
        import skimage
    except ImportError:
        return []
    folder = Path(skimage.__file__).parent / "data"
    return [(folder / name).read_bytes() for name in REAL_PICTURES]


def fidelity(reference: np.ndarray, probs: np.ndarray) -> dict:
    """Top-1 agreement (count), the smallest top-3 overlap, the log-probabilities' noise."""
    ref3, our3 = np.argsort(-reference, 1)[:, :3], np.argsort(-probs, 1)[:, :3]
    error = np.log(np.maximum(probs, 1e-30)) - np.log(np.maximum(reference, 1e-30))
    error -= error.mean(1, keepdims=True)  # a softmax's logits are defined up to a constant
    return {"top1": int((ref3[:, 0] == our3[:, 0]).sum()),
            "top3": min(len(set(a) & set(b)) for a, b in zip(ref3, our3)), "noise": float(error.std())}


def _every_layer_bf16(spec, weights, batch_size):
    """The first bf16 recipe: the network built under the global `mixed_bfloat16` policy."""
    import keras
    import tensorflow as tf

    from labelsd.model.classifier import Classifier
    from labelsd.model.keras_runtime import KerasRuntime

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        network = spec.build_network(weights, spec.check_weights(weights))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    runtime = KerasRuntime(network.model, spec, tf=tf, tf_device="/CPU:0", device="cpu", jit_compile=False,
                           precision="mixed_bfloat16")
    return Classifier(spec, runtime, name=network.name, weights_path=network.weights_path, batch_size=batch_size)


def _tf_converter_int8(spec, weights, batch_size, folder: Path):
    """The first int8 recipe: TensorFlow's converter with Optimize.DEFAULT, on LiteRT."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from labelsd.model.classifier import Classifier
    from labelsd.model.litert import LiteRTRuntime

    network = spec.build_network(weights, spec.check_weights(weights))
    net = network.model
    forward = tf.function(lambda x: tf.nn.softmax(tf.cast(net(x, training=False), tf.float32), axis=-1),
                          input_signature=[tf.TensorSpec([None, *spec.input_shape], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [convert_variables_to_constants_v2(forward.get_concrete_function())])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path = folder / f"{spec.key}.tf-converter-int8.tflite"
    path.write_bytes(converter.convert())
    return Classifier(spec, LiteRTRuntime(path, precision="int8"), name=network.name,
                      weights_path=network.weights_path, batch_size=batch_size)


def _forward_ips(classifier, pixels: np.ndarray, batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        classifier.forward(classifier.pad(pixels[i:i + batch_size]))
    return len(pixels) / (time.perf_counter() - start)


def table(model: str, weights, precisions: list[str], batch_size: int, rounds: int, real: bool) -> None:
    """Print one model's rows (see the module's doc); `real`: its weights are ImageNet's."""
    from labelsd.model.classifier import load_classifier
    from labelsd.model.registry import get_model
    from labelsd.model.runtime import load_model, runtime_kind

    spec = get_model(model)
    blobs = real_pictures()
    reference = load_classifier(weights, "cpu", batch_size, model=model)
    pixels = np.stack([reference.decode(b).pixels for b in blobs])
    with tempfile.TemporaryDirectory() as tmp:
        rows = {"tf-fp32": reference}
        for p in precisions:
            rows[p] = load_model(weights, "cpu", batch_size, p, warm=True, model=model)
        if "bf16" in precisions:
            rows["bf16, every layer (first recipe)"] = _every_layer_bf16(spec, weights, batch_size)
        if "int8" in precisions:
            rows["int8, TF converter (first recipe)"] = _tf_converter_int8(spec, weights, batch_size, Path(tmp))
        speeds = dict.fromkeys(rows, 0.0)
        for _ in range(rounds):  # interleaved, best kept: a neighbour's burst penalises no one row
            for name, clf in rows.items():
                speeds[name] = max(speeds[name], _forward_ips(clf, pixels, batch_size))
        ref = reference.predict(pixels)
        lead = np.sort(ref, 1)[:, -1] - np.sort(ref, 1)[:, -2]
        what = (f"top-1 against TensorFlow fp32 on {len(blobs)} real pictures "
                f"({int((lead < NEAR_TIE).sum())} lead by < {NEAR_TIE} at fp32)" if real
                else "random weights: speed only (agreement needs real weights)")
        print(f"{spec.family} ({'ImageNet weights' if real else 'random weights'}), batch {batch_size}: "
              f"forward over the pictures, best of {rounds}; {what}")
        for name, clf in rows.items():
            line = (f"  {name:34} {runtime_kind(clf):10} forward {speeds[name]:6.2f} img/s "
                    f"{speeds[name] / speeds['tf-fp32']:4.2f}x fp32")
            if real:
                got = fidelity(ref, clf.predict(pixels))
                line += (f"  top-1 agreement {got['top1']}/{len(blobs)}  top-3 overlap >= {got['top3']}/3  "
                         f"noise {got['noise']:.3f}")
            print(line, flush=True)
        del rows


def run(bench_weights: Path, bench_is_imagenet: bool, precisions: list[str], batch_size: int, rounds: int) -> None:
    """The fidelity tables: the bench's InceptionV3, and EfficientNet-Lite0 with its real weights."""
    print("\n== fidelity: each precision against TensorFlow fp32, beside its speed ==", flush=True)
    if not real_pictures():
        print("  no real pictures: pip install scikit-image")
        return
    table("inception_v3", bench_weights, precisions, batch_size, rounds, real=bench_is_imagenet)
    from labelsd.errors import WeightsUnavailable
    from labelsd.model.efficientnet import packaged_weights

    try:
        lite0 = packaged_weights()
    except WeightsUnavailable as err:
        print(f"  EfficientNet-Lite0: {err}")
        return
    table("efficientnet_lite0", lite0, precisions, batch_size, rounds, real=True)
