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
        true_positive = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that occur in labels or predictions."""
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0
