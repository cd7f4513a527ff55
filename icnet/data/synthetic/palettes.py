"""Class ids, colour palettes, ground materials, plane patterns and texture amplitudes.

Everything here is a constant table except `pick` and `shade`, the colour helpers the scene
sampler and the object builders share.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from icnet.data.labels import CITYSCAPES_CLASS_NAMES

_ID = {name: train_id for train_id, name in enumerate(CITYSCAPES_CLASS_NAMES)}
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (
    _ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN = (_ID[n] for n in ("pole", "traffic light", "traffic sign"))
VEGETATION, TERRAIN, SKY = (_ID[n] for n in ("vegetation", "terrain", "sky"))
PERSON, RIDER, CAR, TRUCK, BUS = (_ID[n] for n in ("person", "rider", "car", "truck", "bus"))
TRAIN, MOTORCYCLE, BICYCLE = (_ID[n] for n in ("train", "motorcycle", "bicycle"))

Color = tuple[float, float, float]

# Ground materials and their trainIds.
GROUND_ROAD, GROUND_PAVING, GROUND_CURB, GROUND_GRASS, GROUND_FACADE = range(5)
GROUND_LABELS = np.array([ROAD, SIDEWALK, SIDEWALK, TERRAIN, BUILDING], np.uint8)

# Facade / plane patterns.
PLAIN, WINDOWS, LATTICE, PANELS, LEAFY = range(5)

CAR_COLORS = ((235, 235, 235), (25, 25, 28), (160, 163, 168), (95, 98, 104), (150, 20, 25),
              (25, 50, 120), (30, 70, 45), (200, 170, 40), (180, 160, 130), (90, 30, 30),
              (60, 110, 160))
BUS_COLORS = ((200, 30, 30), (230, 190, 30), (230, 230, 225), (30, 80, 160), (40, 130, 70),
              (230, 120, 30))
TRAM_COLORS = ((230, 230, 220), (200, 40, 40), (240, 200, 40), (40, 90, 170), (60, 150, 90))
CARGO_COLORS = ((235, 235, 235), (190, 190, 195), (150, 40, 40), (40, 70, 140), (230, 200, 60))
CLOTHES = ((30, 30, 35), (40, 50, 90), (150, 30, 30), (200, 200, 190), (90, 70, 50),
           (60, 90, 60), (200, 150, 40), (110, 110, 120), (170, 90, 140))
SKIN = ((230, 190, 160), (200, 150, 110), (140, 95, 65), (95, 65, 45))
FACADES = ((200, 190, 170), (170, 160, 150), (150, 80, 60), (220, 215, 205), (120, 120, 125),
           (190, 170, 120), (160, 110, 90), (180, 190, 200))
WALLS = ((170, 165, 155), (140, 130, 120), (150, 90, 70), (200, 195, 185), (110, 110, 115))
FENCES = ((90, 90, 95), (40, 70, 50), (200, 200, 200), (120, 90, 60))
POLES = ((120, 120, 125), (70, 75, 80), (40, 60, 45), (150, 150, 150))
LEAVES = ((60, 100, 40), (45, 85, 35), (80, 115, 50), (35, 70, 40), (95, 120, 60))
GRASS = ((120, 150, 70), (135, 160, 85), (150, 140, 90), (105, 135, 60))
PAVING = ((150, 150, 150), (175, 170, 160), (160, 130, 120), (130, 130, 135), (185, 180, 170))
HAIR = ((30, 25, 20), (90, 60, 30), (200, 180, 120))
DARK = (28.0, 28.0, 30.0)
GLASS = (45.0, 55.0, 70.0)
METAL = (140.0, 140.0, 145.0)
WHITE = (235.0, 235.0, 230.0)
RED_LAMP = (200.0, 30.0, 30.0)
HEADLAMP = (240.0, 238.0, 215.0)

# Texture amplitudes (0..255 units) per trainId: fine per-pixel grain, mid-scale blotches
# (leafy for vegetation) and coarse large-scale shading.
_TEXTURE = {
    ROAD: (16, 10, 40), SIDEWALK: (14, 12, 30), BUILDING: (8, 16, 40), WALL: (16, 24, 30),
    FENCE: (6, 4, 10), POLE: (6, 4, 10), LIGHT: (4, 0, 0), SIGN: (4, 0, 0),
    VEGETATION: (26, 110, 40), TERRAIN: (30, 40, 45), SKY: (3, 0, 12), PERSON: (8, 12, 10),
    RIDER: (8, 12, 10), CAR: (6, 8, 10), TRUCK: (6, 8, 10), BUS: (6, 8, 10), TRAIN: (6, 8, 10),
    MOTORCYCLE: (8, 6, 10), BICYCLE: (8, 6, 10)}
_AMPLITUDES = np.zeros((256, 3), np.float32)
_AMPLITUDES[list(_TEXTURE)] = list(_TEXTURE.values())
FINE_AMP, MID_AMP, COARSE_AMP = np.ascontiguousarray(_AMPLITUDES.T)


def pick(rng: np.random.Generator, palette: Sequence[Color], spread: float = 15.0) -> Color:
    """A palette colour with a random per-channel variation."""
    base = palette[int(rng.integers(len(palette)))]
    noise = rng.uniform(-spread, spread, 3).tolist()
    return tuple(min(255.0, max(0.0, c + n)) for c, n in zip(base, noise))


def shade(color: Color, factor: float) -> Color:
    return tuple(min(255.0, c * factor) for c in color)
