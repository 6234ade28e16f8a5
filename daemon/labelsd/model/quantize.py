"""The int8 recipe: dynamic-range quantisation of a float `.tflite`, only where it keeps fp32's answers.

Dynamic range: a layer's weights are stored as int8 (symmetric, one scale per output
channel) and the runtime (XNNPACK) quantises its float input to int8 on the fly, per
image, so the layer's dot products run on integers; everything between layers stays
float. The rounding of the input averages out over a long dot product, not over a
short one. So only CONV_2D and FULLY_CONNECTED layers whose dot product has at least
MIN_DOT_LENGTH terms (kernel height x width x input channels) are quantised; the
depthwise convolutions (9 or 25 terms), the first convolution (27 terms, over the
pixels) and the convolutions out of few channels stay float.

TensorFlow's converter (`Optimize.DEFAULT`, the first recipe) quantised every
convolution with 1024 weights or more, depthwise ones included. Measured with
EfficientNet-Lite0's real weights on the 23 pictures of tests/test_precision.py, the
standard deviation of the log-probabilities' error against fp32, and the forward's
speed at batch 8 on one thread (CPU time, so a loaded machine does not blur it), against
LiteRT fp32 (InceptionV3 with random weights: speed only), on a 2-core AMD EPYC; the
rows "this" keep every depthwise convolution float:
    TensorFlow's converter   noise 0.100  top-1 turned on 2 of 23  Lite0 0.45x  InceptionV3 2.89x
    this, every conv and FC  noise 0.117  top-1 turned on 1        Lite0 1.22x
    this, >= 64 terms        noise 0.082  top-1 turned on 1        Lite0 1.55x  InceptionV3 2.89x
    this, >= 128 terms       noise 0.068  top-1 turned on 0        Lite0 1.38x  InceptionV3 2.85x
    this, >= 256 terms       noise 0.055  top-1 turned on 0        Lite0 1.24x  InceptionV3 2.75x
    this, >= 512 terms       noise 0.046  top-1 turned on 0        Lite0 1.14x  InceptionV3 2.24x
(Depthwise convolutions quantised by the converter ran on LiteRT's reference kernels:
int8 Lite0 was slower than fp32.) The weights are quantised here rather than with
ai-edge-quantizer, which does the same per-op but pins ai-edge-litert to one version.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

MIN_DOT_LENGTH = 128
# Recorded beside each converted file: a file made by another recipe is converted again.
RECIPE = f"dynamic-range int8 (per-channel weights): CONV_2D and FULLY_CONNECTED of >= {MIN_DOT_LENGTH} terms"


def quantize_dynamic_range(float_tflite: bytes, min_dot_length: int = MIN_DOT_LENGTH) -> bytes:
    """The float model with the weights of its long CONV_2D / FULLY_CONNECTED layers in int8."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.schema_util import get_builtin_code_from_operator_code
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_tflite))
    wanted = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.FULLY_CONNECTED}
    done = kept = 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
            if code not in wanted:
                continue
            tensor = subgraph.tensors[op.inputs[1]]  # CONV_2D: (O, H, W, I); FULLY_CONNECTED: (O, I)
            buffer = model.buffers[tensor.buffer]
            if tensor.type != schema.TensorType.FLOAT32 or buffer.data is None or not len(buffer.data):
                continue  # not a float constant (or one quantised already, shared with another op)
            weights = np.frombuffer(bytes(buffer.data), np.float32).reshape(tensor.shape)
            if int(np.prod(weights.shape[1:])) < min_dot_length:
                kept += 1
                continue
            rows = weights.reshape(len(weights), -1)
            scale = np.abs(rows).max(1) / np.float32(127)
            scale[scale == 0] = 1  # an all-zero channel: any scale holds it
            q = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
            params = schema.QuantizationParametersT()
            params.scale = scale.astype(np.float32).tolist()
            params.zeroPoint = [0] * len(scale)
            params.quantizedDimension = 0
            tensor.type = schema.TensorType.INT8
            tensor.quantization = params
            buffer.data = np.frombuffer(q.tobytes(), np.uint8)
            done += 1
    log.info("int8 weights in %d layers, %d short ones kept float (%s)", done, kept, RECIPE)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
