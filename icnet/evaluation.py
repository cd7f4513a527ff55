"""Evaluation: segment every image of a split, accumulate the confusion matrix, report IoUs."""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from icnet.data import Source, eval_dataset
from icnet.data.labels import trainid_to_labelid_lut
from icnet.image_io import write_png
from icnet.inference import Segmenter
from icnet.metrics import ConfusionMatrix


def evaluate(segmenter: Segmenter, source: Source, num_images: int = 0,
             resize: tuple[int, int] | None = None,
             predictions_dir: str | None = None, log_every: int = 20) -> dict:
    """mIoU, pixel accuracy and per-class IoU of `segmenter` on `source`.

    Args:
      segmenter: the model (any input size; images are padded to 32k+1 as the reference does).
      source: the evaluation split.
      num_images: evaluate the first N images; 0 = all.
      resize: feed images resized to this (H, W) (ADE20K: 480x480); predictions are resized
        back to the label's size.
      predictions_dir: if set, write each prediction as a Cityscapes labelId PNG named after
        its image (the benchmark submission format).
      log_every: images between progress lines.

    Returns:
      {"miou", "pixel_accuracy" (fractions), "per_class_iou" (by class name, NaN-free: absent
      classes are omitted), "num_images", "confusion_matrix" (rows: labels, columns:
      predictions, as nested lists)}.
    """
    total = len(source) if num_images <= 0 else min(num_images, len(source))
    matrix = ConfusionMatrix(source.num_classes)
    to_label_ids = trainid_to_labelid_lut()
    start = time.time()
    for count, (image, label, name) in enumerate(eval_dataset(source, resize).take(total), 1):
        label = label[0].numpy()
        logits = segmenter.logits(image[0].numpy())
        classes, _ = segmenter.decode(logits, image.shape[1:3])
        if classes.shape != label.shape:
            classes = tf.image.resize(classes[..., None], label.shape,
                                      method="nearest")[..., 0].numpy()
        matrix.update(label, classes)
        if predictions_dir:
            stem = os.path.splitext(os.path.basename(name[0].numpy().decode()))[0]
            write_png(os.path.join(predictions_dir, f"{stem}.png"), to_label_ids[classes])
        if count % log_every == 0 or count == total:
            logging.info("evaluated %d/%d images, running mIoU %.2f%% (%.2f s/image)", count,
                         total, 100 * matrix.miou(), (time.time() - start) / count)
    iou = matrix.per_class_iou()
    return {
        "miou": matrix.miou(),
        "pixel_accuracy": matrix.pixel_accuracy(),
        "per_class_iou": {name: float(value) for name, value in zip(source.class_names, iou)
                          if np.isfinite(value)},
        "num_images": total,
        "confusion_matrix": matrix.matrix.tolist(),
    }


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
