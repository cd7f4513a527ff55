"""Streaming confusion matrix, IoU per class, mIoU and pixel accuracy."""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Accumulates a [num_classes, num_classes] matrix (rows: truth, columns: prediction).

    Pixels whose label is outside [0, num_classes) (e.g. the ignore label 255) are skipped.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, labels: np.ndarray, predictions: np.ndarray) -> None:
        labels = np.asarray(labels).astype(np.int64).ravel()
        predictions = np.asarray(predictions).astype(np.int64).ravel()
        if labels.shape != predictions.shape:
            raise ValueError(f"labels and predictions differ in size: "
                             f"{labels.size} vs {predictions.size}")
        valid = (labels >= 0) & (labels < self.num_classes)
        index = labels[valid] * self.num_classes + np.clip(predictions[valid], 0,
                                                           self.num_classes - 1)
        self.matrix += np.bincount(index, minlength=self.num_classes ** 2).reshape(
            self.num_classes, self.num_classes)

    def per_class_iou(self) -> np.ndarray:
        """IoU per class; NaN for a class absent from both labels and predictions."""
        return per_class_iou(self.matrix)

    def miou(self) -> float:
        """Mean IoU over the classes that occur in labels or predictions."""
        return miou(self.matrix)

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU per class of a confusion matrix; NaN for a class absent from labels and
    predictions."""
    true_positive = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def miou(matrix: np.ndarray) -> float:
    """Mean IoU of a confusion matrix over the classes that occur in it."""
    iou = per_class_iou(matrix)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def paired_miou_interval(a: np.ndarray, b: np.ndarray, rounds: int = 2000,
                         level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of mIoU(a) - mIoU(b) over the evaluation images.

    `a` and `b` are per-image confusion matrices [images, classes, classes] of two models on
    the same images; every round resamples the images with replacement, the same ones for
    both (a paired bootstrap), and scores each model on the summed matrices of that sample.
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if a.shape != b.shape or a.ndim != 3 or not len(a):
        raise ValueError(f"need per-image matrices of the same images, got {a.shape} and "
                         f"{b.shape}")
    samples = np.random.default_rng(seed).integers(0, len(a), (rounds, len(a)))
    differences = [miou(a[s].sum(0)) - miou(b[s].sum(0)) for s in samples]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)
