"""The cascade label guidance loss (REFERENCE.md §3) and weight decay."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

# Loss weights of the three branch outputs: 1/16 (sub4), 1/8 (sub24), 1/4 (sub124).
DEFAULT_LAMBDAS = {"sub4_out": 0.16, "sub24_out": 0.4, "conv6_cls": 1.0}


def downsample_labels(labels: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Nearest-neighbour label resize (TF1 convention) of int labels [B, H, W] to `size`."""
    resized = tf.raw_ops.ResizeNearestNeighbor(images=labels[..., None], size=size,
                                               align_corners=False, half_pixel_centers=False)
    return resized[..., 0]


def branch_loss(logits: tf.Tensor, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Mean softmax cross-entropy over the non-ignored pixels of one output.

    Labels outside [0, num_classes) (the ignore label 255 included) do not count.
    """
    labels = downsample_labels(tf.cast(labels, tf.int32), logits.shape[1:3])
    valid = tf.logical_and(labels >= 0, labels < num_classes)
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe, logits=tf.cast(logits, tf.float32))
    weights = tf.cast(valid, tf.float32)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def cascade_loss(outputs: dict[str, tf.Tensor], labels: tf.Tensor, num_classes: int,
                 lambdas: dict[str, float] = DEFAULT_LAMBDAS) -> tuple[tf.Tensor, dict]:
    """Weighted sum of the branch losses; returns (total, {output name: branch loss})."""
    branches = {name: branch_loss(outputs[name], labels, num_classes) for name in lambdas}
    total = tf.add_n([lambdas[name] * loss for name, loss in branches.items()])
    return total, branches


def weight_decay(model: tf_keras.Model, rate: float) -> tf.Tensor:
    """`rate` times the L2 loss (half the sum of squares) of every conv kernel."""
    kernels = [v for v in model.trainable_variables if "kernel" in v.name]
    return rate * tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])

