"""OpenVINO IR artifacts: the fp32 IR converted from the ONNX model, and its NNCF int8 twin.

The IR has one input `images` uint8 NHWC [1, H, W, 3] and one output `logits` float32
[1, h, w, C] (`class_ids` is cut away: the runtimes time the same work as every other format),
with a static batch of 1 (20-40% faster than a dynamic batch in OpenVINO's CPU plugin) and
float32 weights (`save_model` would store float16 weights by default).

NNCF post-training quantization (`quantize_int8`): the MIXED preset (symmetric int8 weights,
asymmetric activations: ICNet's activations are ReLU outputs, mostly non-negative), activation
ranges by MINMAX over the calibration images, as the TFLite int8 model is calibrated (NNCF's
default MEAN_MINMAX averages per-image ranges and clips the rest, which with tens of images
halved the parity on a full-width model), and the fast bias correction. Convolutions, adds
and pooling run int8; the bilinear resizes stay float. NNCF's overflow fix (7-bit weights) is
applied to the first layer by default and to every layer with `seven_bit_weights`, for x86 CPUs
without VNNI (`icnet.cpu.int8_saturates`).
"""

from __future__ import annotations

from collections.abc import Sized

import numpy as np

from deploy.layout import INPUT_NAME, OUTPUT_NAME
from deploy.runtimes.openvino import import_openvino


def convert(onnx_path: str, input_size: tuple[int, int]):
    """The fp32 `openvino.Model` of an exported ONNX file (logits only, batch 1)."""
    model = import_openvino().convert_model(onnx_path, output=OUTPUT_NAME)
    model.reshape({INPUT_NAME: [1, *input_size, 3]})
    return model


def quantize_int8(model, calibration_images: Sized, seven_bit_weights: bool = False):
    """The NNCF int8 model of an fp32 `openvino.Model`, calibrated on uint8 RGB images (an
    iterable NNCF may pass over more than once, with a length)."""
    import_openvino()  # before nncf imports it
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if not len(calibration_images):
        raise ValueError("int8 OpenVINO needs calibration images")
    return nncf.quantize(
        model, nncf.Dataset(calibration_images,
                            lambda image: np.asarray(image, np.uint8)[None]),
        subset_size=len(calibration_images),
        preset=nncf.QuantizationPreset.MIXED, target_device=nncf.TargetDevice.CPU,
        advanced_parameters=AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
            overflow_fix=nncf.OverflowFix.ENABLE if seven_bit_weights
            else nncf.OverflowFix.FIRST_LAYER))


def write(model, path: str) -> None:
    """Writes the IR (`path` .xml and its .bin) with float32 weights."""
    import_openvino().save_model(model, path, compress_to_fp16=False)
