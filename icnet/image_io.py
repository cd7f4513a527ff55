"""Reading user images and writing colored overlays."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from icnet.fileio import atomic_write_bytes

# Larger images are refused before decoding (decompression-bomb guard): 4x a 4K frame.
MAX_IMAGE_PIXELS = 4 * 3840 * 2160


def read_rgb(path: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Reads an image file as uint8 RGB [H, W, 3] (grayscale and RGBA converted); `max_pixels`
    None leaves only PIL's own decompression-bomb check.

    Raises:
      ValueError: naming the file, if it is missing, not an image, or too large.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ValueError(f"{path}: {width}x{height} exceeds the limit of "
                                 f"{max_pixels} pixels")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e


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
