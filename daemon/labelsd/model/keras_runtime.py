"""The Keras runtime: builds a model's network on a device, in a precision, and runs
one compiled forward per batch. TensorFlow is imported only in `load_keras_runtime`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from labelsd.model.device import configure_device, tensorflow_starting
from labelsd.model.spec import ModelSpec, Network, Outputs
from labelsd.paths import shown

log = logging.getLogger(__name__)

# XLA measured on a 2-core AVX-512 CPU (img/s, batch 1 / batch 8): quiet machine
# 12.4 / 13.6 without, 8.9 / 14.7 with; interleaved A/B on a loaded machine
# 4.7 / 3.6 without, 2.1 / 2.4 with; warm-up 9 s without vs 17 s with (quiet).
# So it is off on CPU. On GPU it is on (static shapes; not measured here).
JIT_ON_CPU = False
JIT_ON_GPU = True

# bf16 on a CPU: which layers compute in bfloat16. Under a global `mixed_bfloat16` every
# layer rounds its input to bfloat16 (8 significant bits): with EfficientNet-Lite0's real
# weights the log-probabilities' error against fp32 had a standard deviation of 0.060 and
# top-1 turned on 3 of tests/test_precision.py's 23 pictures. Keeping the first
# convolution, the head (pooling, logits) or the batch normalisations in float32 changed
# neither; the depthwise convolutions in float32 (dot products of 9 or 25 terms, which
# average no rounding out) kept 2 of the 3, and float32 between the layers (batch norm,
# activations, adds) the third. So only the convolutions after the first (the dense ones, where the
# time goes: oneDNN runs them on AMX / AVX512-BF16) compute in bfloat16; everything else,
# and the activations between layers, stay float32: error 0.023, top-1 equal on all 23.
# No slower than the global policy on a 2-core AMD EPYC (AVX512-BF16, no AMX), loaded:
# Lite0 1.10x fp32 where the global policy gave 0.65x, InceptionV3 1.42x where it gave
# 1.37x (bench/throughput.py prints both). `auto`'s measurement (labelsd.model.fidelity)
# runs bf16 this way too, and records the recipe in its key (labelsd.model.automeasure).
BF16_RECIPE = "bfloat16 in Conv2D after the first; float32 elsewhere"
BF16_LAYERS = ("Conv2D",)


def keep_float32_outside_convs(model) -> int:
    """Put every layer of a model built under `mixed_bfloat16` back on float32 but the
    Conv2D layers after the first (BF16_RECIPE). Returns how many compute in bfloat16.
    Top-level layers only: the models here are flat (no model nested in a layer)."""
    convs = [layer for layer in model.layers if type(layer).__name__ in BF16_LAYERS]
    in_bf16 = set(map(id, convs[1:]))
    for layer in model.layers:
        if id(layer) not in in_bf16:
            layer.dtype_policy = "float32"  # its variables are float32 already (mixed policy)
    return len(in_bf16)


def with_embedding(model):
    """The same network (its layers shared, not copied) with a second output: the
    input of its last layer, the classifier, i.e. the pooled features. Computing it
    costs nothing: the classifier reads it anyway."""
    import keras

    return keras.Model(model.inputs, [model.outputs[0], model.layers[-1].input], name=model.name)


class KerasRuntime:
    """A Keras model's forward pass (softmax applied) and its pooled embedding, as one
    tf.function. A `spec.Runtime`."""

    kind = "tensorflow"

    def __init__(self, model, spec: ModelSpec, *, tf, tf_device: str, device: str,
                 jit_compile: bool, precision: str):
        self.model = model
        self.device = device
        self.on_gpu = tf_device.startswith("/GPU")
        self.static_shapes = jit_compile
        self.jit_compile = jit_compile
        self.precision = precision
        self._tf = tf
        self._tf_device = tf_device

        both = with_embedding(model)

        def forward(x):
            logits, pooled = both(x, training=False)
            # softmax in float32 even under mixed precision (the model outputs logits)
            return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), tf.cast(pooled, tf.float32)

        # XLA compiles one program per static shape (the Classifier pads to a ladder).
        # Without jit, one trace with a free batch dimension serves every size
        # (measured: later sizes cost no tracing), so nothing is padded.
        if jit_compile:
            self.forward_fn = tf.function(forward, jit_compile=True)
        else:
            spec_ = tf.TensorSpec([None, *spec.input_shape], tf.float32)
            self.forward_fn = tf.function(forward, input_signature=[spec_])

    @property
    def trace_count(self) -> int:
        return self.forward_fn.experimental_get_tracing_count()

    def forward(self, padded: np.ndarray) -> Outputs:
        with self._tf.device(self._tf_device):
            probs, pooled = self.forward_fn(self._tf.constant(padded, dtype=self._tf.float32))
            return Outputs(probs.numpy(), pooled.numpy())


def load_keras_runtime(spec: ModelSpec, weights, device: str, *, mixed_precision: bool | None,
                       jit_compile: bool | None) -> tuple[KerasRuntime, Network]:
    """Build `spec`'s network with its weights on `device`; (runtime, network).

    mixed_precision None: on for a GPU of compute capability >= 7, off on CPU.
    jit_compile None: XLA on GPU, off on CPU (it measured slower there).
    """
    checked = spec.check_weights(weights)  # before TensorFlow: a bad file fails fast
    with tensorflow_starting():
        import keras
        import tensorflow as tf

        tf_device, description, cc = configure_device(tf, device)
    on_gpu = tf_device.startswith("/GPU")
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
            network = spec.build_network(weights, checked)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if policy == "mixed_bfloat16":
        log.info("bf16: %d convolutions in bfloat16, every other layer in float32",
                 keep_float32_outside_convs(network.model))
    log.info("loaded %s from %s on %s in %.1fs", network.name, shown(network.weights_path),
             description, time.perf_counter() - start)
    runtime = KerasRuntime(network.model, spec, tf=tf, tf_device=tf_device, device=description,
                           jit_compile=bool(jit_compile), precision=policy or "float32")
    return runtime, network
