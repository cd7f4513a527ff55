"""One runner per artifact type behind one small interface.

A runner has a `name`, an `input_size` (H, W) and `__call__(images)`: uint8 RGB images
[B, H, W, 3] at the input size -> float32 `conv6_cls` logits [B, h, w, C] at 1/4 resolution.
`open_runner(path)` picks the runner from the artifact's type (SavedModel directory or TF
Serving model base directory, `.tflite`, `.onnx`); `segment(runner, image)` turns any image
into class ids the way `icnet.inference.Segmenter` does. Benchmarks time `runner(images)`;
`deploy.predict` calls `segment`.

Example:
    runner = open_runner("export/tflite/icnet_int8.tflite", num_threads=2)
    class_ids, probabilities = segment(runner, read_rgb("street.png"))
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import tensorflow as tf
import tf_keras

from deploy.sessions import open_interpreter, open_onnx_session, pixels_as_input
from icnet.inference import upsample_logits
from icnet.layers import RGB_MEAN


class Runner(Protocol):
    name: str
    input_size: tuple[int, int]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, H, W, 3] -> float32 logits [B, h, w, C]."""


def _check_images(images: np.ndarray, input_size: tuple[int, int], name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (*input_size, 3):
        raise ValueError(f"{name}: expected images [batch, {input_size[0]}, {input_size[1]}, 3], "
                         f"got {list(images.shape)}")
    return images


class KerasRunner:
    """The tf_keras model itself (the fp32 reference)."""

    def __init__(self, model: tf_keras.Model, name: str = "keras fp32"):
        self.model, self.name = model, name
        self.input_size = tuple(int(d) for d in model.input_shape[1:3])
        self._call = tf.function(lambda x: model(x, training=False)["conv6_cls"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images, self.input_size, self.name)
        return self._call(tf.constant(images, tf.float32)).numpy()


def saved_model_version_dir(path: str) -> str:
    """A SavedModel dir, or the newest numeric version under a TF Serving model base dir."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [d for d in os.listdir(path) if d.isdigit()
                and os.path.isfile(os.path.join(path, d, "saved_model.pb"))] \
        if os.path.isdir(path) else []
    if not versions:
        raise ValueError(f"{path}: not a SavedModel (no saved_model.pb) nor a model base "
                         f"directory with numeric versions")
    return os.path.join(path, max(versions, key=int))


class SavedModelRunner:
    """A SavedModel's `serving_default` signature (`images` -> `logits`)."""

    def __init__(self, path: str, signature: str = "serving_default"):
        self.path = saved_model_version_dir(path)
        self._loaded = tf.saved_model.load(self.path)
        if signature not in self._loaded.signatures:
            raise ValueError(f"{self.path}: no signature {signature!r} (has "
                             f"{sorted(self._loaded.signatures)})")
        self._function = self._loaded.signatures[signature]
        spec = self._function.structured_input_signature[1]["images"]
        self.input_size = (int(spec.shape[1]), int(spec.shape[2]))
        self.name = "saved_model"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images, self.input_size, self.name)
        return self._function(images=tf.constant(images, tf.uint8))["logits"].numpy()


class TFLiteRunner:
    """A `.tflite` file under ai_edge_litert's Interpreter.

    Args:
      path: the flatbuffer.
      num_threads: interpreter threads (None: the runtime's default).
      xnnpack: use the default XNNPACK delegate; False runs the reference (builtin) kernels.
    """

    def __init__(self, path: str, num_threads: int | None = None, xnnpack: bool = True):
        self.path = path
        self._interpreter = open_interpreter(path, num_threads, xnnpack)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.input_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        self.name = f"tflite {os.path.basename(path)}" + ("" if xnnpack else " (reference)")

    def _dequantize(self, value: np.ndarray) -> np.ndarray:
        scale, zero_point = self._output["quantization"]
        if value.dtype == np.float32:
            return value
        return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images, self.input_size, self.name)
        outputs = []
        for image in images:  # the flatbuffer has batch 1
            self._interpreter.set_tensor(self._input["index"], pixels_as_input(
                image[None], self._input["dtype"], self._input["quantization"]))
            self._interpreter.invoke()
            outputs.append(self._dequantize(self._interpreter.get_tensor(self._output["index"])))
        return np.concatenate(outputs)


class OnnxRunner:
    """An `.onnx` file under ONNX Runtime (CPU)."""

    def __init__(self, path: str, num_threads: int | None = None):
        self.path = path
        self._session, (self._input, self._dtype, self.input_size) = open_onnx_session(
            path, num_threads)
        self.name = f"onnx {os.path.basename(path)}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images, self.input_size, self.name)
        return self._session.run(["logits"], {self._input: images.astype(self._dtype)})[0]


def artifact_kind(path: str) -> str:
    """"saved_model", "tflite" or "onnx" from the path.

    Raises:
      ValueError: anything else.
    """
    if os.path.isdir(path):
        saved_model_version_dir(path)
        return "saved_model"
    if path.endswith(".tflite"):
        return "tflite"
    if path.endswith(".onnx"):
        return "onnx"
    raise ValueError(f"{path}: not an exported artifact (a SavedModel directory, .tflite or "
                     f".onnx file)")


def is_artifact(path: str) -> bool:
    """True for a path `open_runner` accepts (checkpoint dirs and .npy files are not)."""
    try:
        artifact_kind(path)
    except (ValueError, OSError):
        return False
    return os.path.exists(path)


def open_runner(path: str, num_threads: int | None = None, xnnpack: bool = True) -> Runner:
    """The runner for an artifact, chosen from its type (see `artifact_kind`).

    Raises:
      FileNotFoundError: no such path.
      ValueError: not an artifact, or one its runtime cannot load (naming the file).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    kind = artifact_kind(path)
    try:
        if kind == "saved_model":
            return SavedModelRunner(path)
        if kind == "tflite":
            return TFLiteRunner(path, num_threads, xnnpack)
        return OnnxRunner(path, num_threads)
    except MemoryError:
        raise
    except Exception as e:  # each runtime has its own parse errors; name the file
        if isinstance(e, ValueError) and path in str(e):
            raise
        raise ValueError(f"{path}: cannot load this {kind} artifact "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e


def fit_image(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """An RGB image as a runner input: (uint8 [H, W, 3] at `input_size`, padded?).

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


def _full_logits(runner: Runner, image: np.ndarray) -> tuple[tf.Tensor, np.ndarray]:
    """(logits upsampled to the image's size [H, W, C], the runner's 1/4 logits)."""
    height, width = image.shape[:2]
    batch, padded = fit_image(np.asarray(image), runner.input_size)
    logits = runner(batch[None])
    if padded:
        return upsample_logits(logits, runner.input_size)[0, :height, :width], logits
    return upsample_logits(logits, (height, width))[0], logits


def segment(runner: Runner, image: np.ndarray, with_logits: bool = False) -> tuple:
    """Class ids [H, W] uint8 and probabilities [H, W, C] for an RGB image of any size.

    An image that fits the runner's input is padded and the logits, upsampled to the input
    size (bilinear, aligned corners), cropped, as `icnet.inference.Segmenter` does: when the
    image's 32k+1 padded size is the input size, the result is the checkpoint's (exactly, for
    images of the input size). A larger image is resized to the input size and its logits
    upsampled straight to the image's size, as the SavedModel's `serve_image_bytes` does.

    Args:
      runner: any runner.
      image: uint8 RGB [H, W, 3].
      with_logits: also return the runner's 1/4-resolution logits [1, h, w, C] (what
        `Segmenter.logits` returns, for images whose padded size is the input size).

    Returns:
      (class_ids, probabilities) or, with `with_logits`, (class_ids, probabilities, logits).
    """
    full, logits = _full_logits(runner, image)
    probabilities = tf.nn.softmax(full, axis=-1).numpy()
    class_ids = probabilities.argmax(-1).astype(np.uint8)
    return (class_ids, probabilities, logits) if with_logits else (class_ids, probabilities)


def class_ids(runner: Runner, image: np.ndarray) -> np.ndarray:
    """`segment`'s class ids without the probabilities (argmax of the upsampled logits)."""
    return tf.cast(tf.argmax(_full_logits(runner, image)[0], axis=-1), tf.uint8).numpy()
