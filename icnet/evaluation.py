"""Evaluation: segment every image of a split, accumulate the confusion matrix, report IoUs."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from icnet.config import ICNetConfig
from icnet.data import Source, ade20k, eval_dataset
from icnet.data.labels import trainid_to_labelid_lut
from icnet.image_io import write_png
from icnet.inference import Segmenter
from icnet.layers import resize_bilinear
from icnet.metrics import ConfusionMatrix
from icnet.weights import WeightDict


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How images are fed and predictions scored.

    Attributes:
      resize: feed images resized to this (H, W), bilinear with aligned corners, unpadded;
        None pads them to 32k+1.
      logits_to_label: upsample the logits straight to the label's size (bilinear, aligned
        corners) and take the argmax there, as the reference's evaluate.py (for a padded
        input this stretches the padding over the image: one pixel for Cityscapes' 1024 ->
        1025, more for sizes farther from 32k+1); otherwise upsample to the padded input,
        crop to the image (as inference does) and take the argmax.
      cityscapes_eval_pools: 1025x2049 inputs get the reference's Cityscapes evaluation pools.
    """

    resize: tuple[int, int] | None = None
    logits_to_label: bool = False
    cityscapes_eval_pools: bool = False

    def __post_init__(self):
        if self.resize is not None and not self.logits_to_label:
            raise ValueError("resized (unpadded) inputs need logits_to_label: cropping the "
                             "logits back assumes a padded input")


# The reference's evaluate.py protocols; other datasets are scored as inference segments.
REFERENCE_PROTOCOLS = {
    "cityscapes": Protocol(logits_to_label=True, cityscapes_eval_pools=True),
    "ade20k": Protocol(resize=ade20k.EVAL_SIZE, logits_to_label=True),
}


def protocol_for(dataset: str) -> Protocol:
    """The reference's evaluation protocol for `dataset` (the inference one for the others)."""
    return REFERENCE_PROTOCOLS.get(dataset, Protocol())


def segmenter_for(config: ICNetConfig, weights: WeightDict, source: Source) -> Segmenter:
    """The Segmenter that `evaluate` scores a model on `source` with (its protocol's pools)."""
    return Segmenter(config, weights, protocol_for(source.name).cityscapes_eval_pools)


def evaluate(config: ICNetConfig, weights: WeightDict, source: Source, num_images: int = 0,
             predictions_dir: str | None = None, log_every: int = 20,
             per_image: bool = False, segmenter: Segmenter | None = None) -> dict:
    """mIoU, pixel accuracy and per-class IoU of a model on `source`.

    Images are fed and scored by `protocol_for(source.name)`: the reference's evaluate.py
    protocol for Cityscapes and ADE20K, the inference one for the other datasets.

    Args:
      config, weights: the model (as from `icnet.inference.load_weights`).
      source: the evaluation split.
      num_images: evaluate the first N images; 0 = all.
      predictions_dir: if set, write each prediction as a Cityscapes labelId PNG named after
        its image (the benchmark submission format).
      log_every: images between progress lines.
      per_image: also return each image's confusion matrix (for paired bootstrap intervals,
        `icnet.metrics.paired_miou_interval`).
      segmenter: the model as `segmenter_for(config, weights, source)` made it, reused (its
        weights replaced with `Segmenter.load`) to score many variants of one model without
        building it again; config and weights are then ignored.

    Returns:
      {"miou", "pixel_accuracy" (fractions), "per_class_iou" (by class name, NaN-free: absent
      classes are omitted), "num_images", "confusion_matrix" (rows: labels, columns:
      predictions, as nested lists)}, and with `per_image` "per_image_confusion" (one such
      matrix per image).
    """
    total = len(source) if num_images <= 0 else min(num_images, len(source))
    matrix = ConfusionMatrix(source.num_classes)
    to_label_ids = trainid_to_labelid_lut()
    start = time.time()
    protocol = protocol_for(source.name)
    segmenter = segmenter or segmenter_for(config, weights, source)
    batches = eval_dataset(source, protocol.resize).take(total)
    images = []
    for count, (image, label, name) in enumerate(batches, 1):
        label = label[0].numpy()
        logits = segmenter.logits(image[0].numpy(), pad=protocol.resize is None)
        if protocol.logits_to_label:
            upsampled = resize_bilinear(logits, label.shape, align_corners=True)
            classes = tf.argmax(upsampled[0], axis=-1, output_type=tf.int32).numpy()
            classes = classes.astype(np.uint8)
        else:
            classes, _ = segmenter.decode(logits, image.shape[1:3])
            if classes.shape != label.shape:
                classes = tf.image.resize(classes[..., None], label.shape,
                                          method="nearest")[..., 0].numpy()
        if per_image:
            image_matrix = ConfusionMatrix(source.num_classes)
            image_matrix.update(label, classes)
            images.append(image_matrix.matrix.tolist())
        matrix.update(label, classes)
        if predictions_dir:
            stem = os.path.splitext(os.path.basename(name[0].numpy().decode()))[0]
            write_png(os.path.join(predictions_dir, f"{stem}.png"), to_label_ids[classes])
        if count % log_every == 0 or count == total:
            logging.info("evaluated %d/%d images, running mIoU %.2f%% (%.2f s/image)", count,
                         total, 100 * matrix.miou(), (time.time() - start) / count)
    iou = matrix.per_class_iou()
    result = {
        "miou": matrix.miou(),
        "pixel_accuracy": matrix.pixel_accuracy(),
        "per_class_iou": {name: float(value) for name, value in zip(source.class_names, iou)
                          if np.isfinite(value)},
        "num_images": total,
        "confusion_matrix": matrix.matrix.tolist(),
    }
    if per_image:
        result["per_image_confusion"] = images
    return result


def format_table(result: dict, class_names: tuple[str, ...]) -> str:
    """A per-class IoU table followed by mIoU and pixel accuracy."""
    lines = [f"{'class':<16} {'IoU %':>7}"]
    for name in class_names:
        value = result["per_class_iou"].get(name)
        lines.append(f"{name:<16} {'absent' if value is None else f'{100 * value:7.2f}':>7}")
    lines.append(f"{'mIoU':<16} {100 * result['miou']:7.2f}")
    lines.append(f"{'pixel accuracy':<16} {100 * result['pixel_accuracy']:7.2f}")
    lines.append(f"({result['num_images']} images)")
    return "\n".join(lines)
