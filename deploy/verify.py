"""Artifact verification: logit parity against the fp32 Keras model, and mIoU per session.

Works on any `deploy.runtimes` session and makes one pass over the data for all sessions
together, so every artifact under every runtime is measured on the same images the same way.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator, Mapping

import numpy as np
import tensorflow as tf
from absl import logging

from deploy.runtimes import Session
from deploy.segment import fit_image, full_logits, logits
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


def verify_sessions(sessions: Mapping[Hashable, Session], reference_of: Mapping[Hashable, Hashable],
                    source: Source, parity_images: int, eval_images: int,
                    log_every: int = 5) -> dict[Hashable, dict]:
    """Parity and mIoU of every session in one pass over the first images of `source`.

    Every image runs once through every session (padded or resized to its input size as
    `deploy.segment.segment` does). On the first `parity_images`, a session with an entry in
    `reference_of` (the key of another session in `sessions`, its fp32 model) has its 1/4
    logits compared with that reference's; on the first `eval_images`, every session's class
    ids (at the label's size) are scored.

    Returns:
      {key: ParityStats.result() (sessions with a reference, when parity_images > 0) merged
      with {"miou", "pixel_accuracy" (fractions), "eval_images", "seconds_per_image"} (when
      eval_images > 0)}.
    """
    parity_total = min(parity_images, len(source))
    eval_total = min(eval_images, len(source))
    total = max(parity_total, eval_total)
    parity = {key: ParityStats() for key in sessions if key in reference_of}
    matrices = {key: ConfusionMatrix(source.num_classes) for key in sessions}
    seconds = {key: 0.0 for key in sessions}
    start = time.time()
    for count, (image, label, _) in enumerate(eval_dataset(source).take(total), 1):
        image, label = image[0].numpy(), label[0].numpy()
        small = {}
        for key, session in sessions.items():
            begin = time.time()
            if count > eval_total:
                small[key] = logits(session, fit_image(image, session.input_size)[0])
                continue
            full, small[key] = full_logits(session, image)
            classes = tf.cast(tf.argmax(full, axis=-1), tf.uint8).numpy()
            if classes.shape != label.shape:
                classes = tf.image.resize(classes[..., None], label.shape,
                                          method="nearest")[..., 0].numpy()
            matrices[key].update(label, classes)
            seconds[key] += time.time() - begin
        if count <= parity_total:
            for key, stats in parity.items():
                stats.update(small[key], small[reference_of[key]])
        if count % log_every == 0 or count == total:
            logging.info("verified %d/%d images (%.0f s)%s", count, total, time.time() - start,
                         "" if count > eval_total else ": " + ", ".join(
                             f"{_name(key)} {100 * m.miou():.2f}%"
                             for key, m in matrices.items()))
    results = {key: parity[key].result() if parity_total and key in parity else {}
               for key in sessions}
    if eval_total:
        for key, m in matrices.items():
            results[key].update(miou=m.miou(), pixel_accuracy=m.pixel_accuracy(),
                                eval_images=eval_total,
                                seconds_per_image=round(seconds[key] / eval_total, 4))
    return results


def _name(key: Hashable) -> str:
    return " ".join(str(part) for part in key) if isinstance(key, tuple) else str(key)
