"""Reading user images and writing colored overlays."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from icnet.fileio import atomic_write_bytes

# Larger images are refused before decoding (decompression-bomb guard): 4x a 4K frame.
MAX_IMAGE_PIXELS = 4 * 3840 * 2160


# PIL modes of 16-bit grayscale files (PNG, TIFF); "I" is how PIL opens most 16-bit PNGs.
_GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I")


def read_rgb(path: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Reads an image file as uint8 RGB [H, W, 3] (grayscale, 16-bit grayscale and RGBA
    converted); `max_pixels` None leaves only PIL's own decompression-bomb check.

    Raises:
      ValueError: naming the file, if it is missing, not an image, too large, or of a pixel
        format with no 8-bit meaning (floating point, integers above 16 bits).
    """
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not an image file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ValueError(f"{path}: {width}x{height} exceeds the limit of "
                                 f"{max_pixels} pixels")
            if image.mode in _GRAY16_MODES:
                return _gray16_to_rgb(np.asarray(image), path)
            if image.mode == "F":
                raise ValueError(f"{path}: floating-point pixels (PIL mode F) are not "
                                 f"supported; save the image with 8 or 16 bits per channel")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e


def _gray16_to_rgb(gray: np.ndarray, path: str) -> np.ndarray:
    """16-bit gray levels (0..65535) scaled to 8 bits and repeated over R, G and B."""
    gray = gray.astype(np.int64)
    if gray.min() < 0 or gray.max() > 65535:
        raise ValueError(f"{path}: integer pixels outside 0..65535 are not supported")
    eight_bit = np.round(gray / 257.0).astype(np.uint8)
    return np.repeat(eight_bit[..., None], 3, axis=-1)


def colorize(class_ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class ids [H, W] -> uint8 RGB colors [H, W, 3]; ids outside the palette are black."""
    table = np.zeros((256, 3), np.uint8)
    table[:len(palette)] = palette
    return table[np.clip(class_ids, 0, 255).astype(np.uint8)]


def overlay(image: np.ndarray, class_ids: np.ndarray, palette: np.ndarray,
            alpha: float = 0.5) -> np.ndarray:
    """Blends the colorized class map over the image."""
    colors = colorize(class_ids, palette).astype(np.float32)
    return (alpha * colors + (1 - alpha) * image.astype(np.float32)).round().astype(np.uint8)


def write_png(path: str, array: np.ndarray, compress_level: int = 6) -> None:
    """Writes a uint8 image atomically (temp file in the same directory, then rename)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    atomic_write_bytes(path, buffer.getvalue())
