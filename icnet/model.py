"""The one ICNet builder (functional tf_keras, the reference graph's layer names).

`build_icnet(config, input_size)` builds the graph of REFERENCE.md §1 for a static input size:
pre-processing, the three branches, pyramid pooling (a sum), the two cascade feature fusion
units, the classifier and, for the BN variant, the two training heads. Input sizes of the form
32k+1 flow through without resampling; other sizes get the reference's resize-before-sum.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras
from tf_keras import layers

from icnet.config import ICNetConfig
from icnet.layers import Interp, LegacyResize, Preprocess

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.95
PYRAMID_BINS = (1, 2, 3, 6)
MIN_INPUT_SIZE = 161  # the smallest input whose 1/32 feature map holds 6 pyramid bins

# The reference evaluates Cityscapes with the original Caffe prototxt's pyramid pools: for the
# 33x65 conv5_3 map of a 1025x2049 input, (kernel, stride) per bin count, overlapping windows
# that cover the whole map (kernel = stride = floor(h/b) leaves the last rows/columns out).
CITYSCAPES_EVAL_POOLS = {1: ((33, 65), (33, 65)), 2: ((17, 33), (16, 32)),
                         3: ((13, 25), (10, 20)), 6: ((8, 15), (5, 10))}
CITYSCAPES_EVAL_MAP = (33, 65)
CITYSCAPES_EVAL_INPUT = (1025, 2049)


def conv_unit(x: tf.Tensor, config: ICNetConfig, name: str, kernel: int, *, stride: int = 1,
              dilation: int = 1, padding: str = "same", relu: bool = True) -> tf.Tensor:
    """Conv `name` (width from the plan), its BN `name_bn` in the BN variant, optional ReLU."""
    x = layers.Conv2D(config.plan[name], kernel, strides=stride, dilation_rate=dilation,
                      padding=padding, use_bias=not config.batch_norm, name=name)(x)
    if config.batch_norm:
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                      name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def reference_sum(inputs: list[tf.Tensor], name: str) -> tf.Tensor:
    """The reference `add`: resize the first input (legacy bilinear) to the second's size, sum."""
    first, rest = inputs[0], inputs[1:]
    channels = {t.name.split("/")[0]: t.shape[-1] for t in inputs}
    if len(set(channels.values())) != 1:
        raise ValueError(f"channel plan: the inputs of `{name}` must have equal widths, "
                         f"got {channels}")
    target = tuple(rest[0].shape[1:3])
    if tuple(first.shape[1:3]) != target:
        first = LegacyResize(target, name=f"{name}_resize")(first)
    return layers.Add(name=name)([first, *rest])


def bottleneck(x: tf.Tensor, config: ICNetConfig, prefix: str, *, stride: int = 1,
               dilation: int = 1, project: bool = False) -> tf.Tensor:
    """ResNet bottleneck: 1x1 reduce, 3x3 (dilated), 1x1 increase, shortcut, sum, ReLU."""
    shortcut = x
    if project:
        shortcut = conv_unit(x, config, f"{prefix}_1x1_proj", 1, stride=stride,
                             padding="valid", relu=False)
    y = conv_unit(x, config, f"{prefix}_1x1_reduce", 1, stride=stride, padding="valid")
    y = conv_unit(y, config, f"{prefix}_3x3", 3, dilation=dilation)
    y = conv_unit(y, config, f"{prefix}_1x1_increase", 1, relu=False)
    return layers.ReLU(name=f"{prefix}_relu")(reference_sum([shortcut, y], name=prefix))


def residual_stage(x: tf.Tensor, config: ICNetConfig, stage: str, blocks: int, stride: int,
                   dilation: int, first_block: int = 1) -> tf.Tensor:
    for block in range(first_block, blocks + 1):
        x = bottleneck(x, config, f"{stage}_{block}", stride=stride if block == 1 else 1,
                       dilation=dilation, project=block == 1)
    return x


def pyramid_pooling(x: tf.Tensor, cityscapes_eval_pools: bool = False) -> tf.Tensor:
    """Average pools over 1, 2, 3 and 6 bins, resized back (align corners) and summed with x.

    Pools use kernel = stride = floor(h/b) x floor(w/b), or with `cityscapes_eval_pools` the
    reference's Cityscapes evaluation windows (CITYSCAPES_EVAL_POOLS, 33x65 maps only).
    """
    h, w = x.shape[1], x.shape[2]
    if min(h, w) < max(PYRAMID_BINS):
        raise ValueError(f"input too small: the 1/32 feature map is {h}x{w}, pyramid pooling "
                         f"needs {max(PYRAMID_BINS)}x{max(PYRAMID_BINS)} (inputs of at least "
                         f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE})")
    if cityscapes_eval_pools and (h, w) != CITYSCAPES_EVAL_MAP:
        raise ValueError(f"the Cityscapes evaluation pools need a 33x65 conv5_3 map (a "
                         f"1025x2049 input), got {h}x{w}")
    branches = []
    for bins in reversed(PYRAMID_BINS):  # the reference sums pool6, pool3, pool2, pool1
        pool = (h // bins, w // bins)
        kernel, stride = CITYSCAPES_EVAL_POOLS[bins] if cityscapes_eval_pools else (pool, pool)
        y = layers.AveragePooling2D(kernel, strides=stride, padding="valid",
                                    name=f"conv5_3_pool{bins}")(x)
        branches.append(Interp(size=(h, w), name=f"conv5_3_pool{bins}_interp")(y))
    return reference_sum([x, *branches], name="conv5_3_sum")


def classifier(x: tf.Tensor, config: ICNetConfig, name: str) -> tf.Tensor:
    return layers.Conv2D(config.num_classes, 1, name=name)(x)


def build_icnet(config: ICNetConfig, input_size: tuple[int, int], name: str = "icnet",
                cityscapes_eval_pools: bool = False) -> tf_keras.Model:
    """Builds ICNet for RGB images of a static `input_size` (H, W).

    Args:
      config: class count, channel plan and BN variant.
      input_size: (height, width) of the input images; 32k+1 sizes avoid resampling.
      name: the Keras model name.
      cityscapes_eval_pools: pyramid pooling with the windows of the reference's Cityscapes
        evaluation graph (1025x2049 inputs only) instead of floor(h/b) bins.

    Returns:
      A model mapping float RGB images [B, H, W, 3] in [0, 255] to a dict of logits:
      `conv6_cls` (1/4 resolution) and, in the BN variant, `sub4_out` (1/16) and
      `sub24_out` (1/8).
    """
    height, width = input_size
    images = tf_keras.Input((height, width, 3), name="image")
    data = Preprocess(name="preprocess")(images)

    # Half-resolution branch: ResNet stem and stages up to conv3_1 (1/16 of the input).
    x = Interp(shrink=0.5, name="data_sub2")(data)
    x = conv_unit(x, config, "conv1_1_3x3_s2", 3, stride=2)
    x = conv_unit(x, config, "conv1_2_3x3", 3)
    x = conv_unit(x, config, "conv1_3_3x3", 3)
    x = layers.ZeroPadding2D(1, name="padding0")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1_3x3_s2")(x)
    x = residual_stage(x, config, "conv2", 3, stride=1, dilation=1)
    sub2 = bottleneck(x, config, "conv3_1", stride=2, project=True)

    # Quarter-resolution branch: the rest of the dilated ResNet and pyramid pooling.
    x = Interp(shrink=0.5, name="conv3_1_sub4")(sub2)
    x = residual_stage(x, config, "conv3", 4, stride=1, dilation=1, first_block=2)
    x = residual_stage(x, config, "conv4", 6, stride=1, dilation=2)
    x = residual_stage(x, config, "conv5", 3, stride=1, dilation=4)
    x = pyramid_pooling(x, cityscapes_eval_pools)
    x = conv_unit(x, config, "conv5_4_k1", 1)
    sub4 = Interp(zoom=2, name="conv5_4_interp")(x)

    # Cascade feature fusion: sub4 with sub2.
    x = conv_unit(sub4, config, "conv_sub4", 3, dilation=2, relu=False)
    y = conv_unit(sub2, config, "conv3_1_sub2_proj", 1, relu=False)
    x = layers.ReLU(name="sub24_sum_relu")(reference_sum([x, y], name="sub24_sum"))
    sub24 = Interp(zoom=2, name="sub24_sum_interp")(x)

    # Full-resolution branch and the second fusion.
    y = conv_unit(data, config, "conv1_sub1", 3, stride=2)
    y = conv_unit(y, config, "conv2_sub1", 3, stride=2)
    y = conv_unit(y, config, "conv3_sub1", 3, stride=2)
    y = conv_unit(y, config, "conv3_sub1_proj", 1, relu=False)
    x = conv_unit(sub24, config, "conv_sub2", 3, dilation=2, relu=False)
    x = layers.ReLU(name="sub12_sum_relu")(reference_sum([x, y], name="sub12_sum"))
    x = Interp(zoom=2, name="sub12_sum_interp")(x)

    outputs = {"conv6_cls": classifier(x, config, "conv6_cls")}
    if config.batch_norm:
        outputs["sub4_out"] = classifier(sub4, config, "sub4_out")
        outputs["sub24_out"] = classifier(sub24, config, "sub24_out")
    return tf_keras.Model(images, outputs, name=name)

