"""Label definitions: Cityscapes ids and trainIds, class names and color palettes."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IGNORE_LABEL = 255


class CityscapesLabel(NamedTuple):
    name: str
    label_id: int
    train_id: int
    color: tuple[int, int, int]


# The official Cityscapes label table (cityscapesScripts `labels.py`): id, trainId, color.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, (0, 0, 0)),
    CityscapesLabel("static", 4, 255, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, (70, 130, 180)),
    CityscapesLabel("person", 24, 11, (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, (255, 0, 0)),
    CityscapesLabel("car", 26, 13, (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, (119, 11, 32)),
    CityscapesLabel("license plate", -1, 255, (0, 0, 142)),
)

_TRAIN_LABELS = sorted((l for l in CITYSCAPES_LABELS if l.train_id != IGNORE_LABEL),
                       key=lambda l: l.train_id)

CITYSCAPES_NUM_CLASSES = 19
CITYSCAPES_CLASS_NAMES: tuple[str, ...] = tuple(l.name for l in _TRAIN_LABELS)
CITYSCAPES_PALETTE = np.array([l.color for l in _TRAIN_LABELS], dtype=np.uint8)


def labelid_to_trainid_lut() -> np.ndarray:
    """A uint8[256] table mapping Cityscapes labelIds to trainIds (255 = ignore)."""
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if label.label_id >= 0:
            lut[label.label_id] = label.train_id
    return lut


def trainid_to_labelid_lut() -> np.ndarray:
    """A uint8[256] table mapping trainIds 0..18 to Cityscapes labelIds (others to 0)."""
    lut = np.zeros(256, dtype=np.uint8)
    for label in _TRAIN_LABELS:
        lut[label.train_id] = label.label_id
    return lut
