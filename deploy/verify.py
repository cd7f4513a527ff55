"""Artifact verification: logit parity against the fp32 Keras model, and mIoU per session.

Both work on any `deploy.runtimes` session and make one pass over the data for all sessions
together, so every artifact under every runtime is measured on the same images the same way.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator, Mapping

import numpy as np
import tensorflow as tf
from absl import logging

from deploy.runtimes import Session
from deploy.segment import class_ids, fit_image, logits
from icnet.data import Source, eval_dataset
from icnet.metrics import ConfusionMatrix


class SourceImages:
    """The first `count` images of a source as uint8 RGB at `size`, re-read on every pass
    (padded or resized as `deploy.segment.fit_image` does), so large calibration sets are
    never all in memory."""

    def __init__(self, source: Source, count: int, size: tuple[int, int]):
        self.source, self.size = source, tuple(size)
        self.count = max(0, min(count, len(source)))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        if not self.count:
            return
        for image, _, _ in self.source.dataset().take(self.count):
            yield fit_image(image.numpy(), self.size)[0]


class ParityStats:
    """Accumulates logit errors and argmax agreement of one artifact against the reference."""

    def __init__(self):
        self.max_abs = 0.0
        self.squared_error = 0.0
        self.squared_reference = 0.0
        self.agree = 0
        self.pixels = 0
        self.images = 0

    def update(self, candidate: np.ndarray, reference: np.ndarray) -> None:
        if candidate.shape != reference.shape:
            raise ValueError(f"logits shapes differ: {candidate.shape} vs reference "
                             f"{reference.shape}")
        difference = candidate.astype(np.float64) - reference.astype(np.float64)
        self.max_abs = max(self.max_abs, float(np.abs(difference).max()))
        self.squared_error += float(np.sum(difference ** 2))
        self.squared_reference += float(np.sum(reference.astype(np.float64) ** 2))
        self.agree += int(np.sum(candidate.argmax(-1) == reference.argmax(-1)))
        self.pixels += int(np.prod(reference.shape[:-1]))
        self.images += int(reference.shape[0])

    def result(self) -> dict:
        """{"max_abs_error", "rel_l2_error", "argmax_agreement" (fraction), "parity_images"}."""
        norm = np.sqrt(self.squared_reference)
        return {"max_abs_error": self.max_abs,
                "rel_l2_error": float(np.sqrt(self.squared_error) / norm) if norm else None,
                "argmax_agreement": self.agree / self.pixels if self.pixels else None,
                "parity_images": self.images}


def compare_sessions(reference: Session, sessions: Mapping[Hashable, Session],
                     images) -> dict[Hashable, dict]:
    """Parity of every session against `reference` on `images` (uint8 at the input size)."""
    stats = {key: ParityStats() for key in sessions}
    for count, image in enumerate(images, 1):
        expected = logits(reference, image)
        for key, session in sessions.items():
            stats[key].update(logits(session, image), expected)
        logging.info("parity: image %d/%d", count, len(images))
    return {key: value.result() for key, value in stats.items()}


def evaluate_sessions(sessions: Mapping[Hashable, Session], source: Source, num_images: int,
                      log_every: int = 20) -> dict[Hashable, dict]:
    """mIoU and pixel accuracy of every session on the first `num_images` of `source`.

    Each image goes through `deploy.segment.class_ids` (padded or resized to the session's
    input size; class ids at the label's size).

    Returns:
      {key: {"miou", "pixel_accuracy" (fractions), "eval_images", "seconds_per_image"}}.
    """
    total = min(num_images, len(source))
    matrices = {key: ConfusionMatrix(source.num_classes) for key in sessions}
    seconds = {key: 0.0 for key in sessions}
    for count, (image, label, _) in enumerate(eval_dataset(source).take(total), 1):
        label = label[0].numpy()
        for key, session in sessions.items():
            start = time.time()
            classes = class_ids(session, image[0].numpy())
            seconds[key] += time.time() - start
            if classes.shape != label.shape:
                classes = tf.image.resize(classes[..., None], label.shape,
                                          method="nearest")[..., 0].numpy()
            matrices[key].update(label, classes)
        if count % log_every == 0 or count == total:
            logging.info("evaluated %d/%d images: %s", count, total, ", ".join(
                f"{_name(key)} {100 * m.miou():.2f}%" for key, m in matrices.items()))
    return {key: {"miou": m.miou(), "pixel_accuracy": m.pixel_accuracy(),
                  "eval_images": total,
                  "seconds_per_image": round(seconds[key] / max(total, 1), 4)}
            for key, m in matrices.items()}


def _name(key: Hashable) -> str:
    return " ".join(str(part) for part in key) if isinstance(key, tuple) else str(key)
