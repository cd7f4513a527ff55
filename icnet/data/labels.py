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


# The 150 SceneParsing (ADEChallengeData2016) classes in official order (objectInfo150, first
# name of each entry): annotation value v in 1..150 is class v - 1 here.
ADE20K_CLASS_NAMES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)


def _bit_palette(num_colors: int) -> np.ndarray:
    """Distinct colors from the PASCAL VOC scheme: the bits of 1..n spread over R, G and B."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        code, color = index + 1, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                color[channel] |= ((code >> channel) & 1) << shift
            code >>= 3
        palette[index] = color
    return palette


ADE20K_PALETTE = _bit_palette(len(ADE20K_CLASS_NAMES))


def palette_for(num_classes: int) -> np.ndarray:
    """A uint8[num_classes, 3] RGB palette: Cityscapes for 19, ADE20K for 150, else generated.

    Args:
        num_classes: number of classes, at least 1.

    Returns:
        A fresh array (callers may modify it); the generated palette is deterministic and has no
        black entry, so black can stand for the ignore label.

    Raises:
        ValueError: if num_classes < 1.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if num_classes == CITYSCAPES_NUM_CLASSES:
        return CITYSCAPES_PALETTE.copy()
    if num_classes == len(ADE20K_CLASS_NAMES):
        return ADE20K_PALETTE.copy()
    return _bit_palette(num_classes)
