"""uint8 RGB pixels as a TFLite model's input tensor (NumPy only: no TensorFlow import, so the
benchmark workers that run TFLite models stay TensorFlow-free)."""

from __future__ import annotations

import numpy as np


def pixels_as_input(image: np.ndarray, dtype, quantization: tuple[float, int]) -> np.ndarray:
    """uint8 pixels for an input of `dtype` with (scale, zero point) `quantization`: float32
    pixels, raw uint8 (scale 1 or unquantized), or requantized integers."""
    if dtype == np.float32:
        return image.astype(np.float32)
    scale, zero_point = quantization
    if dtype == np.uint8 and scale in (0.0, 1.0) and zero_point == 0:
        return image.astype(np.uint8)
    info = np.iinfo(dtype)
    return np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(dtype)
