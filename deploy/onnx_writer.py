"""ONNX artifacts via tf2onnx, with explicit output sizes for every bilinear resize.

The ONNX model has the SavedModel's `serving_default` interface: input `images` uint8 NHWC
[batch, H, W, 3]; outputs `logits` float32 [batch, h, w, C] (1/4) and `class_ids` uint8
[batch, H, W]. `quantize_int8` makes its static QDQ int8 twin with ONNX Runtime.

The resize fix. tf2onnx (1.17, opset >= 11) turns a `ResizeBilinear` with static shapes into
an ONNX `Resize` driven by float32 *scales* (out/in). ONNX computes the output length as
floor(in * scale), and for ICNet's align-corners sizes (2n-1 from n, (n-1)/2+1 from n) that
product rounds below the integer (e.g. 17 * (33/17) = 32.99.. -> 32), so onnxruntime rejects or
mis-shapes the graph (at 1025x2049: 32x64 where TF has 33x65). `resize_handler` replaces
tf2onnx's handler for `ResizeBilinear`: it emits `Resize` with explicit integer `sizes` (the
TF op's static output size; with opset >= 18 as `axes=[2, 3]` sizes, otherwise the runtime
batch and channels concatenated with the constant H, W) and the coordinate transformation of
the TF op (`align_corners`, `half_pixel`, or `asymmetric` for TF1's legacy resize), so the
ONNX graph computes exactly what TF computes.
"""

from __future__ import annotations

import logging as py_logging
from collections.abc import Iterable

import numpy as np
import onnx
import tensorflow as tf

from icnet.fileio import atomic_write_bytes

DEFAULT_OPSET = 17
OPSETS = range(13, 19)  # those tested with tf2onnx 1.17 and ONNX Runtime


def resize_handler(ctx, node, name, args):
    """tf2onnx custom handler: TF ResizeBilinear (NHWC) -> Transpose, Resize(sizes), Transpose."""
    del name, args
    from tf2onnx import constants, utils

    target = node.inputs[1]
    utils.make_sure(target.is_const(), "%s: the resize size must be a constant (static "
                    "input shapes)", node.name)
    out_h, out_w = (int(v) for v in target.get_tensor_value())
    align = bool(node.get_attr_value("align_corners", 0))
    half_pixel = bool(node.get_attr_value("half_pixel_centers", 0))
    utils.make_sure(not (align and half_pixel), "%s: align_corners with half_pixel_centers",
                    node.name)
    mode = "align_corners" if align else "half_pixel" if half_pixel else "asymmetric"
    to_nchw = ctx.make_node("Transpose", [node.input[0]], {"perm": constants.NHWC_TO_NCHW})
    roi = ctx.make_const(utils.make_name("roi"), np.array([], np.float32))
    scales = ctx.make_const(utils.make_name("scales"), np.array([], np.float32))
    attr = {"mode": "linear", "coordinate_transformation_mode": mode}
    if ctx.opset >= 18:
        sizes = ctx.make_const(utils.make_name("sizes"), np.array([out_h, out_w], np.int64))
        attr["axes"] = [2, 3]
    else:
        shape = ctx.make_node("Shape", [to_nchw.output[0]])
        batch_channels = ctx.make_node(
            "Slice", [shape.output[0],
                      ctx.make_const(utils.make_name("start"), np.array([0], np.int64)).output[0],
                      ctx.make_const(utils.make_name("end"), np.array([2], np.int64)).output[0]])
        spatial = ctx.make_const(utils.make_name("hw"), np.array([out_h, out_w], np.int64))
        sizes = ctx.make_node("Concat", [batch_channels.output[0], spatial.output[0]],
                              {"axis": 0})
    resize = ctx.make_node("Resize", [to_nchw.output[0], roi.output[0], scales.output[0],
                                      sizes.output[0]], attr=attr)
    shapes, dtypes = node.output_shapes, node.output_dtypes
    ctx.remove_node(node.name)
    ctx.make_node("Transpose", resize.output, {"perm": constants.NCHW_TO_NHWC}, name=node.name,
                  outputs=node.output, shapes=shapes, dtypes=dtypes)


def convert(function: tf.types.experimental.GenericFunction, opset: int = DEFAULT_OPSET
            ) -> onnx.ModelProto:
    """Converts a `tf.function` with an input signature (e.g. the serving module's
    `serve_images`) to ONNX with the resize fix.

    Raises:
      ValueError: tf2onnx could not convert some op (it otherwise only logs such errors).
    """
    import tf2onnx

    spec = function.input_signature
    errors = []

    class _Collect(py_logging.Handler):
        def emit(self, record):
            if record.levelno >= py_logging.ERROR:
                errors.append(record.getMessage())

    logger = py_logging.getLogger("tf2onnx")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        model, _ = tf2onnx.convert.from_function(
            function, input_signature=spec, opset=opset,
            custom_op_handlers={"ResizeBilinear": (resize_handler, [])})
    finally:
        logger.removeHandler(handler)
    if errors:
        raise ValueError("tf2onnx failed: " + "; ".join(errors[:5]))
    for value in [*model.graph.input, *model.graph.output]:  # name the dynamic batch axis
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = "batch"
    return model


def write(model: onnx.ModelProto, path: str) -> int:
    """Checks (`onnx.checker` with full_check) and writes atomically; returns the size."""
    onnx.checker.check_model(model, full_check=True)
    content = model.SerializeToString()
    atomic_write_bytes(path, content)
    return len(content)


def quantize_int8(fp32_path: str, path: str, calibration_images: Iterable[np.ndarray],
                  seven_bit_weights: bool = False) -> None:
    """A static QDQ int8 model of the fp32 ONNX file, calibrated on uint8 RGB images.

    ONNX Runtime's `quantize_static`: QDQ format, per-channel weights, unsigned 8-bit
    activations with signed 8-bit weights (U8S8: on x86 with VNNI every Conv, Add and
    AveragePool fuses into its QLinear kernel; S8S8 leaves a third of them in float), MinMax
    calibration as the TFLite int8 model has. The uint8 image input stays as it is (the
    graph's first op casts it to float). `seven_bit_weights` (ONNX Runtime's `reduce_range`)
    keeps the weights in 7 bits, for x86 CPUs without VNNI (`icnet.cpu.int8_saturates`).
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._images = iter(calibration_images)

        def get_next(self):
            image = next(self._images, None)
            return None if image is None else {"images": np.asarray(image, np.uint8)[None]}

    previous = py_logging.getLogger().level
    py_logging.getLogger().setLevel(py_logging.ERROR)  # its "pre-process the model" advice
    try:
        quantize_static(fp32_path, path, Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, reduce_range=seven_bit_weights)
    finally:
        py_logging.getLogger().setLevel(previous)
    onnx.checker.check_model(path, full_check=True)
