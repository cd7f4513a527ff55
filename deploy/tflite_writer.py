"""TFLite artifacts: conversion under one quantization spec, and the GPU-delegate verdict.

A TFLite ICNet has one input `images` [1, H, W, 3] (float32 RGB in 0..255, or uint8 raw pixels
for the integer quantizations) and one output `logits` [1, h, w, C] float32 at 1/4 of the
input (the `conv6_cls` logits; argmax after a bilinear align-corners upsample gives classes),
and a `serving_default` signature with these names (what a SignatureRunner and LiteRT's
CompiledModel use). The converter's fast route (a traced function, no SavedModel detour, 10-20x
quicker) writes no signature and names the output `Identity`, so `add_signature` adds both to
the flatbuffer with the TFLite model schema that LiteRT ships.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from deploy.quantize import (
    configure_converter,
    quantization_spec,
    representative_dataset,
)
from icnet.fileio import atomic_write_bytes

from deploy.layout import INPUT_NAME, OUTPUT_NAME, SIGNATURE


def logits_function(model: tf_keras.Model, input_size: tuple[int, int]):
    """The concrete function converted: float32 images [1, H, W, 3] -> {"logits"}."""
    height, width = input_size

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32,
                                                name=INPUT_NAME)])
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)["conv6_cls"]}

    return serve.get_concrete_function()


def convert(model: tf_keras.Model, input_size: tuple[int, int], quantization: str,
            calibration_images: Sequence[np.ndarray] | None = None) -> bytes:
    """Converts an ICNet to a TFLite flatbuffer.

    Args:
      model: the float BN-merged model (for `qat`: the quantization-aware model).
      input_size: (H, W) of the model.
      quantization: one of deploy.quantize.QUANTIZATIONS.
      calibration_images: uint8 RGB [H, W, 3] training images (required by `int8`).

    Returns:
      The flatbuffer bytes.

    Raises:
      ValueError: an unknown quantization, missing calibration images, or a `qat`
        conversion of a model that is not quantization-aware (or vice versa).
    """
    spec = quantization_spec(quantization)
    is_qat = any(type(layer).__name__ == "QuantizeLayer" for layer in model.layers)
    if spec.quantization_aware != is_qat:
        kind = "quantization-aware" if spec.quantization_aware else "float"
        raise ValueError(f"{quantization}: expected a {kind} model")
    function = logits_function(model, input_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    # Convert the traced graph directly: the default detour through a temporary SavedModel
    # gives the same flatbuffer and takes 10-20x longer.
    converter.experimental_lower_to_saved_model = False
    data = representative_dataset(calibration_images) if spec.calibrated else None
    configure_converter(converter, spec, data)
    with warnings.catch_warnings():
        # Integer inputs: the converter warns that no input statistics were given; their
        # quantization comes from calibration or the QAT input range, checked below.
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        content = add_signature(converter.convert())
    if spec.integer_only:
        check_pixel_input(content)
    return content


def add_signature(content: bytes) -> bytes:
    """The flatbuffer with a `serving_default` signature (`images` -> `logits`) and its input
    and output tensors named so."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"expected one input and one output, got {len(graph.inputs)} and "
                         f"{len(graph.outputs)}")

    def tensor_map(name: str, index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE, 0
    signature.inputs = [tensor_map(INPUT_NAME, graph.inputs[0])]
    signature.outputs = [tensor_map(OUTPUT_NAME, graph.outputs[0])]
    model.signatureDefs = [signature]
    graph.tensors[graph.inputs[0]].name = INPUT_NAME
    graph.tensors[graph.outputs[0]].name = OUTPUT_NAME
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def input_details(content: bytes) -> dict:
    """The input tensor's details (dtype, shape, quantization) of a flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter
    return Interpreter(model_content=content).get_input_details()[0]


def check_pixel_input(content: bytes) -> None:
    """Warns unless a uint8 input is exactly raw pixels (scale 1, zero point 0)."""
    details = input_details(content)
    scale, zero_point = details["quantization"]
    if details["dtype"] != np.uint8 or abs(scale - 1.0) > 1e-6 or zero_point != 0:
        logging.warning("integer TFLite input is %s with scale %s, zero point %s (not raw "
                        "pixels); runners requantize", details["dtype"].__name__, scale,
                        zero_point)


def write(content: bytes, path: str) -> int:
    """Writes a flatbuffer atomically; returns its size in bytes."""
    atomic_write_bytes(path, content)
    return len(content)


@dataclasses.dataclass(frozen=True)
class GpuCompatibility:
    """The TFLite Analyzer's GPU-delegate verdict.

    Attributes:
      compatible: True when the Analyzer reports no incompatible op.
      problems: the Analyzer's incompatibility lines (empty when compatible).
      report: the Analyzer's full text.
    """

    compatible: bool
    problems: tuple[str, ...]
    report: str


def gpu_compatibility(content: bytes) -> GpuCompatibility:
    """Runs `tf.lite.experimental.Analyzer` with `gpu_compatibility=True` and parses it."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tf.lite.experimental.Analyzer.analyze(model_content=content, gpu_compatibility=True)
    report = buffer.getvalue()
    compatible = "looks compatible with GPU delegate" in report
    problems = tuple(line.strip() for line in report.splitlines()
                     if re.search(r"GPU COMPATIBILITY WARNING|Not supported|not supported",
                                  line))
    if not compatible and not problems:
        problems = ("the Analyzer did not report compatibility",)
    return GpuCompatibility(compatible, problems, report)
