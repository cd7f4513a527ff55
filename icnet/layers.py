"""The small custom layers ICNet needs, each a named layer with `get_config` (no Lambdas).

The reference graph resizes in two ways: `interp` (bilinear, align_corners=True, sizes
derived from the input's static shape) and the resize that every two-input sum applies to its
first input (legacy TF1 bilinear: align_corners=False, half_pixel_centers=False).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

# Caffe-style BGR mean that the reference subtracts (REFERENCE.md §2).
BGR_MEAN = (103.939, 116.779, 123.68)
RGB_MEAN = tuple(reversed(BGR_MEAN))


def resize_bilinear(x: tf.Tensor, size: tuple[int, int], align_corners: bool) -> tf.Tensor:
    """TF1's bilinear resize (no half-pixel centers), as the reference graph uses it."""
    return tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=align_corners,
                                     half_pixel_centers=False)


def interp_size(n: int, shrink: float = 1.0, zoom: float = 1.0) -> int:
    """The reference `interp` output length: shrink to (n-1)*s+1, then zoom to n+(n-1)*(z-1)."""
    shrunk = (n - 1) * shrink + 1
    return int(shrunk + (shrunk - 1) * (zoom - 1))


@tf_keras.utils.register_keras_serializable("icnet")
class Preprocess(tf_keras.layers.Layer):
    """RGB pixels in [0, 255] (any dtype) -> BGR minus the reference mean, float32."""

    def call(self, images):
        # One 1x1 convolution with a channel-reversing 0/1 kernel and the negated BGR mean as
        # bias: in float32 it computes exactly x - mean per channel (products by 1 and 0 are
        # exact), and TFLite runs it as one CONV_2D that XNNPACK delegates in int8 too (the
        # slices of a per-channel formulation are not delegated there).
        reverse = tf.constant(np.eye(3, dtype=np.float32)[::-1].reshape(1, 1, 3, 3))
        return tf.nn.bias_add(tf.nn.conv2d(tf.cast(images, tf.float32), reverse, 1, "VALID"),
                              -tf.constant(BGR_MEAN, tf.float32))


@tf_keras.utils.register_keras_serializable("icnet")
class Interp(tf_keras.layers.Layer):
    """Bilinear resize with align_corners=True to a fixed size or a reference shrink/zoom."""

    def __init__(self, shrink: float = 1.0, zoom: float = 1.0,
                 size: tuple[int, int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.shrink, self.zoom = shrink, zoom
        self.size = tuple(size) if size is not None else None

    def output_size(self, input_shape) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ValueError(f"{self.name}: needs a static spatial shape, got {input_shape}")
        return interp_size(h, self.shrink, self.zoom), interp_size(w, self.shrink, self.zoom)

    def call(self, x):
        return resize_bilinear(x, self.output_size(x.shape), align_corners=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size(input_shape), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "shrink": self.shrink, "zoom": self.zoom,
                "size": self.size}


@tf_keras.utils.register_keras_serializable("icnet")
class LegacyResize(tf_keras.layers.Layer):
    """TF1 `resize_bilinear` (no align_corners, no half-pixel centers) to a fixed size."""

    def __init__(self, size: tuple[int, int], **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(size)

    def call(self, x):
        return resize_bilinear(x, self.size, align_corners=False)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size}
