"""The SavedModel export module (TF Serving layout), its signatures, and warmup requests.

`ICNetServingModule` follows TF Model Garden's serving modules: `serve(images)` runs the model
and returns named outputs; one `tf.function` per input type decodes its input and calls it:

- `serving_default` (`serve_images`): `images` uint8 RGB [batch, H, W, 3] at the export size
  -> `class_ids` uint8 [batch, H, W] (logits upsampled bilinearly with aligned corners, argmax)
  and `logits` float32 [batch, h, w, C] at 1/4 of the input.
- `serve_image_bytes`: `image_bytes` string [batch] of JPEG or PNG files of any size -> each
  image is decoded, resized to the export size (bilinear), run, and its logits upsampled to
  the image's own size: `class_ids` uint8 [batch, max H, max W] (padded with 255 beyond an
  image's size when the batch mixes sizes) and `image_size` int32 [batch, 2] (H, W).

Bad bytes fail with a message before anything large is allocated: the format is checked by
magic number, the dimensions are read from the header (PNG IHDR; JPEG SOF via
`tf.io.extract_jpeg_shape`) and refused above `max_image_pixels` before decoding.
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow as tf
import tf_keras
from PIL import Image

from icnet.image_io import MAX_IMAGE_PIXELS
from icnet.layers import RGB_MEAN, resize_bilinear

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serve_image_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
WARMUP_FILENAME = "tf_serving_warmup_requests"
PAD_CLASS = 255

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class _Untracked:
    """Keeps an object out of SavedModel tracking (the Keras model: only its variables are
    saved, with the signatures; serializing its layers would triple the save time)."""

    def __init__(self, value):
        self.value = value


class ICNetServingModule(tf.Module):
    """Serving signatures around a BN-merged ICNet built at the export size.

    Args:
      model: from `icnet.inference.build_inference_model` (input float RGB [B, H, W, 3]).
      max_image_pixels: largest decoded image (H * W) that `serve_image_bytes` accepts.
    """

    def __init__(self, model: tf_keras.Model, max_image_pixels: int = MAX_IMAGE_PIXELS):
        super().__init__(name="icnet_serving")
        self._keras_model = _Untracked(model)
        self.model_variables = list(model.variables)
        height, width = model.input_shape[1:3]
        if height is None or width is None:
            raise ValueError("the export model needs a static input size")
        self.input_size = (int(height), int(width))
        self.num_classes = int(model.output_shape["conv6_cls"][-1])
        if self.num_classes > 256:
            raise ValueError(f"class_ids are uint8: at most 256 classes, got {self.num_classes}")
        self.max_image_pixels = int(max_image_pixels)
        h, w = self.input_size
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, h, w, 3], tf.uint8, name=IMAGES_INPUT)])
        self.serve_image_bytes = tf.function(
            self._serve_image_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])

    @property
    def model(self) -> tf_keras.Model:
        return self._keras_model.value

    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """RGB images [B, H, W, 3] (any real dtype, 0..255) -> class ids and 1/4 logits."""
        logits = self.model(tf.cast(images, tf.float32), training=False)["conv6_cls"]
        return {"class_ids": class_map(logits, self.input_size), "logits": logits}

    def _serve_images(self, images):
        # Checked at run time: a SavedModel's callers (TF Serving, loaded signatures) can feed
        # any shape, and some kernels abort the process on a wrong rank instead of failing.
        return self.serve(tf.ensure_shape(images, [None, *self.input_size, 3]))

    def _serve_image_bytes(self, image_bytes):
        image_bytes = tf.ensure_shape(image_bytes, [None])
        images, sizes = tf.map_fn(self._decode, image_bytes,
                                  fn_output_signature=(tf.TensorSpec([*self.input_size, 3],
                                                                     tf.float32),
                                                       tf.TensorSpec([2], tf.int32)))
        logits = self.serve(images)["logits"]
        max_size = tf.reduce_max(tf.concat([sizes, tf.zeros([1, 2], tf.int32)], 0), axis=0)

        def to_image_size(args):
            one_logits, size = args
            classes = class_map(one_logits[None], size)[0]
            return tf.pad(classes, [[0, max_size[0] - size[0]], [0, max_size[1] - size[1]]],
                          constant_values=PAD_CLASS)

        class_ids = tf.map_fn(to_image_size, (logits, sizes),
                              fn_output_signature=tf.TensorSpec([None, None], tf.uint8))
        return {"class_ids": class_ids, "image_size": sizes}

    def _decode(self, data):
        """One JPEG/PNG string -> (float RGB at the export size, original (H, W))."""
        size = checked_image_size(data, self.max_image_pixels)
        with tf.control_dependencies([size]):
            image = tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                                       expand_animations=False)
        image = tf.ensure_shape(image, [None, None, 3])
        # (Bilinear resizing to the same size is the identity: the interpolation weights are
        # exactly 1 and 0.)
        resized = tf.image.resize(tf.cast(image, tf.float32), self.input_size,
                                  method="bilinear")
        return tf.ensure_shape(resized, [*self.input_size, 3]), tf.shape(image)[:2]

    def signatures(self) -> dict:
        return {DEFAULT_SIGNATURE: self.serve_images.get_concrete_function(),
                BYTES_SIGNATURE: self.serve_image_bytes.get_concrete_function()}


def class_map(logits: tf.Tensor, size) -> tf.Tensor:
    """uint8 class ids [B, H, W]: logits upsampled to `size` (bilinear, aligned corners)."""
    return tf.cast(tf.argmax(resize_bilinear(logits, size, align_corners=True), axis=-1),
                   tf.uint8)


def _be_uint32(data: tf.Tensor, offset: int) -> tf.Tensor:
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, 4), tf.uint8), tf.int64)
    return raw[0] * 16777216 + raw[1] * 65536 + raw[2] * 256 + raw[3]


def checked_image_size(data: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """(H, W) int32 of a JPEG/PNG string read from its header, checked against `max_pixels`.

    Raises (at run time, tf.errors.InvalidArgumentError with a message): empty or unknown
    data, a corrupt header, zero dimensions, or more than `max_pixels` pixels.
    """
    length = tf.strings.length(data)
    # Header fields are read from a zero-padded copy, so short strings never index out of range.
    header = tf.strings.join([tf.strings.substr(data, 0, 24), b"\0" * 24])
    is_png = tf.logical_and(
        length >= 24,
        tf.logical_and(tf.equal(tf.strings.substr(header, 0, 8), _PNG_MAGIC),
                       tf.equal(tf.strings.substr(header, 12, 4), b"IHDR")))
    is_jpeg = tf.logical_and(length >= 4,
                             tf.equal(tf.strings.substr(header, 0, 3), _JPEG_MAGIC))
    known = tf.debugging.Assert(
        tf.logical_or(is_png, is_jpeg),
        [("image bytes are not a JPEG or PNG file (empty, truncated or another format); "
          "bytes received:"), length])
    with tf.control_dependencies([known]):
        size = tf.cond(
            is_png,
            lambda: tf.stack([_be_uint32(header, 20), _be_uint32(header, 16)]),
            lambda: tf.cond(is_jpeg,
                            lambda: tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64),
                            lambda: tf.zeros([2], tf.int64)))
    height, width = size[0], size[1]
    limit = tf.constant(max_pixels, tf.int64)
    too_large = (f"image too large: its header claims more than {max_pixels} pixels "
                 f"(height x width); refused before decoding")
    checks = [tf.debugging.assert_positive(size, message="image header gives a zero width "
                                                         "or height"),
              tf.debugging.assert_less_equal(size, limit, message=too_large)]
    with tf.control_dependencies(checks):  # each side <= limit: the product cannot overflow
        area = tf.debugging.assert_less_equal(height * width, limit, message=too_large)
    with tf.control_dependencies([area]):
        return tf.cast(tf.identity(size), tf.int32)


def save(module: ICNetServingModule, path: str) -> None:
    """Writes the SavedModel with both signatures to `path` (which must not exist)."""
    tf.saved_model.save(module, path, signatures=module.signatures())


# --------------------------------------------------------------------------------------------
# Warmup requests.

WARMUP_PNG_SIDE = 64  # the warmup PNG is at most this many pixels a side


def warmup_requests(module: ICNetServingModule, model_name: str) -> list:
    """One PredictionLog per signature: a mean-gray image tensor and a small PNG."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    height, width = module.input_size
    gray = np.empty((1, height, width, 3), np.uint8)
    gray[...] = np.round(RGB_MEAN).astype(np.uint8)
    png = encode_png(gray[0, :WARMUP_PNG_SIDE, :WARMUP_PNG_SIDE])
    logs = []
    for signature, name, value in ((DEFAULT_SIGNATURE, IMAGES_INPUT, gray),
                                   (BYTES_SIGNATURE, BYTES_INPUT, np.array([png], object))):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup(module: ICNetServingModule, saved_model_dir: str, model_name: str) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog)."""
    directory = os.path.join(saved_model_dir, "assets.extra")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILENAME)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(module, model_name):
            writer.write(log.SerializeToString())
    return path


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
