"""Inference on images of any size: pad to the next 32k+1, run ICNet, upsample, crop back."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras

from icnet.checkpoint import load_checkpoint_weights
from icnet.config import ICNetConfig
from icnet.layers import RGB_MEAN, resize_bilinear
from icnet.model import CITYSCAPES_EVAL_INPUT, MIN_INPUT_SIZE, build_icnet
from icnet.weights import (WeightDict, assign_weights, config_from_weights, fold_batch_norm,
                           load_npy_weights)


def load_weights(path: str, num_classes: int | None = None,
                 filter_scale: float | None = None) -> tuple[ICNetConfig, WeightDict]:
    """Loads a reference `.npy` or a training checkpoint (model dir or prefix).

    The channel plan comes from the file itself (shapes, or the checkpoint's plan.json);
    `num_classes` and `filter_scale`, when given, are checked against it.

    Raises:
      ValueError: the file disagrees with the given class count or filter scale.
    """
    if path.endswith(".npy"):
        weights = load_npy_weights(path)
        config = config_from_weights(weights, path)
    else:
        config, weights = load_checkpoint_weights(path)
    if num_classes is not None and num_classes != config.num_classes:
        raise ValueError(f"{path}: has {config.num_classes} classes, but --num_classes "
                         f"is {num_classes}")
    if filter_scale is not None:
        expected = ICNetConfig.from_filter_scale(filter_scale, config.num_classes).plan
        if expected != config.plan:
            diff = sorted(k for k in expected if expected[k] != config.plan[k])
            raise ValueError(f"{path}: widths differ from filter_scale {filter_scale} "
                             f"at {diff[:5]}{'...' if len(diff) > 5 else ''}")
    return config, weights


def merged(config: ICNetConfig, weights: WeightDict) -> tuple[ICNetConfig, WeightDict]:
    """The BN-merged (inference) variant of a model's config and weights."""
    if not config.batch_norm:
        return config, weights
    return config.replace(batch_norm=False), fold_batch_norm(weights)


def build_inference_model(config: ICNetConfig, weights: WeightDict,
                          input_size: tuple[int, int],
                          cityscapes_eval_pools: bool = False) -> tf_keras.Model:
    """The BN-merged model at `input_size` with `weights` loaded (pools: see build_icnet)."""
    config, weights = merged(config, weights)
    model = build_icnet(config, input_size, cityscapes_eval_pools=cityscapes_eval_pools)
    assign_weights(model, weights)
    return model


def padded_size(n: int) -> int:
    """The smallest 32k+1 >= n (and >= the minimum input): sizes that need no resampling."""
    return max(MIN_INPUT_SIZE, 32 * math.ceil((n - 1) / 32) + 1)


def upsample_logits(logits: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Resizes 1/4-resolution logits to the (padded) input size, bilinear with aligned corners."""
    return resize_bilinear(logits, size, align_corners=True)


def pad_image(image: np.ndarray) -> np.ndarray:
    """Pads an RGB image at the bottom/right to 32k+1 with the mean color (zero after
    pre-processing, as the reference pads)."""
    height, width = image.shape[:2]
    padded = np.empty((padded_size(height), padded_size(width), 3), np.float32)
    padded[...] = RGB_MEAN
    padded[:height, :width] = image
    return padded


class Segmenter:
    """Runs a model on images of any size (one compiled model per input size).

    With `cityscapes_eval_pools`, 1025x2049 inputs get the pyramid pools of the reference's
    Cityscapes evaluation graph (model.CITYSCAPES_EVAL_POOLS); other sizes floor(h/b) bins.
    """

    def __init__(self, config: ICNetConfig, weights: WeightDict,
                 cityscapes_eval_pools: bool = False):
        self._source_config = config
        self.config, self.weights = merged(config, weights)
        self.cityscapes_eval_pools = cityscapes_eval_pools
        self._models: dict[tuple[int, int], tf_keras.Model] = {}

    def load(self, weights: WeightDict) -> None:
        """Replaces the weights (of the same config) in the models built so far."""
        _, self.weights = merged(self._source_config, weights)
        for model in self._models.values():
            assign_weights(model, self.weights)

    def model_for(self, size: tuple[int, int]) -> tf_keras.Model:
        if size not in self._models:
            pools = self.cityscapes_eval_pools and tuple(size) == CITYSCAPES_EVAL_INPUT
            self._models[size] = build_inference_model(self.config, self.weights, size, pools)
        return self._models[size]

    def logits(self, image: np.ndarray, pad: bool = True) -> np.ndarray:
        """`conv6_cls` logits [1, h, w, C] for the image padded to 32k+1 (or as it is)."""
        feed = pad_image(image) if pad else np.asarray(image, np.float32)
        model = self.model_for(feed.shape[:2])
        return model(feed[None], training=False)["conv6_cls"].numpy()

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (class ids [H, W] uint8, probabilities [H, W, C] float32) for an RGB image."""
        return self.decode(self.logits(image), image.shape[:2])

    @staticmethod
    def decode(logits: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and probabilities at `size` from the padded input's 1/4 logits."""
        height, width = size
        full = upsample_logits(logits, (padded_size(height), padded_size(width)))
        probabilities = tf.nn.softmax(full[0, :height, :width], axis=-1).numpy()
        return probabilities.argmax(-1).astype(np.uint8), probabilities
