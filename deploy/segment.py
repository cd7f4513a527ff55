"""Any image through a fixed-size session: pad or resize to its input, map the result back.

`segment(session, image)` gives class ids and probabilities at the image's size the way
`icnet.inference.Segmenter` does for a checkpoint; verification's mIoU and deploy.predict use
it on every runtime's sessions.

Example:
    session = open_session("export/tflite/icnet_int8.tflite", threads=2)
    class_ids, probabilities = segment(session, read_rgb("street.png"))
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from deploy.runtimes import Session
from icnet.inference import upsample_logits
from icnet.layers import RGB_MEAN


def fit_image(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """An RGB image as a session input: (uint8 [H, W, 3] at `input_size`, padded?).

    An image that fits is padded at the bottom/right with the mean color rounded to integers
    (`Segmenter` pads with the exact mean, which becomes zero after pre-processing; the
    rounding moves padded pixels by at most 0.5); a larger one is resized (bilinear, as
    `serve_image_bytes` does).
    """
    height, width = image.shape[:2]
    target_h, target_w = input_size
    if height <= target_h and width <= target_w:
        canvas = np.empty((target_h, target_w, 3), np.uint8)
        canvas[...] = np.round(RGB_MEAN).astype(np.uint8)
        canvas[:height, :width] = image
        return canvas, True
    resized = tf.image.resize(np.asarray(image, np.float32), input_size, method="bilinear")
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8), False


def logits(session: Session, image: np.ndarray) -> np.ndarray:
    """The session's 1/4-resolution logits [1, h, w, C] for one uint8 image at its input size."""
    return session.run(session.prepare(np.asarray(image)[None]))


def full_logits(session: Session, image: np.ndarray) -> tuple[tf.Tensor, np.ndarray]:
    """(logits upsampled to the image's size [H, W, C], the session's 1/4 logits)."""
    height, width = image.shape[:2]
    fitted, padded = fit_image(np.asarray(image), session.input_size)
    small = logits(session, fitted)
    if padded:
        return upsample_logits(small, session.input_size)[0, :height, :width], small
    return upsample_logits(small, (height, width))[0], small


def segment(session: Session, image: np.ndarray, with_logits: bool = False) -> tuple:
    """Class ids [H, W] uint8 and probabilities [H, W, C] for an RGB image of any size.

    An image that fits the session's input is padded and the logits, upsampled to the input
    size (bilinear, aligned corners), cropped, as `icnet.inference.Segmenter` does: when the
    image's 32k+1 padded size is the input size, the result is the checkpoint's (exactly, for
    images of the input size). A larger image is resized to the input size and its logits
    upsampled straight to the image's size, as the SavedModel's `serve_image_bytes` does.

    Returns:
      (class_ids, probabilities), and with `with_logits` also the 1/4 logits [1, h, w, C].
    """
    full, small = full_logits(session, image)
    probabilities = tf.nn.softmax(full, axis=-1).numpy()
    class_ids = probabilities.argmax(-1).astype(np.uint8)
    return (class_ids, probabilities, small) if with_logits else (class_ids, probabilities)


def class_ids(session: Session, image: np.ndarray) -> np.ndarray:
    """`segment`'s class ids without the probabilities (argmax of the upsampled logits)."""
    return tf.cast(tf.argmax(full_logits(session, image)[0], axis=-1), tf.uint8).numpy()
