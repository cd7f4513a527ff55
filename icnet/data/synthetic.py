"""Procedurally rendered Cityscapes-like street scenes: the kit's embedded default dataset.

A pinhole camera 1.5 m above a flat ground looks down a straight street. The layout is
sampled in metres from a generator seeded by ``(seed, index)``: lanes with lane marks,
crosswalks and optional tram rails, curbs, grass strips, sidewalks and verges, building and park
facades along both sides with window grids, walls, see-through fences and hedges in front
of them, an end-of-street facade, and objects (cars, trucks, buses, trams, motorcycles and
bicycles with riders, pedestrians, poles with traffic lights and signs, street lamps, trees).
Points are projected to normalized image coordinates, so one ``(seed, index)`` is the same
scene at every resolution. Rendering has three stages:

1. background planes (sky, ground, facades, walls/fences/hedges), vectorized over
   per-row/per-column coordinate grids with perspective-correct patterns;
2. objects as projected polygons, ellipses and thick lines drawn far-to-near with PIL into
   a shape-index map, so nearer objects occlude farther ones in image and label alike;
3. class-dependent texture noise, clouds, per-image hue/saturation/white-balance/
   contrast/brightness jitter, and a light blur of the image (never of the label).

Labels are Cityscapes trainIds 0..18 (see ``icnet.data.labels``); no pixel is ignore (255).
Scene i of a split is ``render_scene(split_seed(seed, split), i, height, width)``, both for
the in-memory source and for the files written here.

Write a data set in the official Cityscapes directory layout:

    python -m icnet.data.synthetic --out data/synthetic --train 500 --val 100 \\
        --size 512x1024 --seed 0
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFilter

from icnet.cli import parse_size
from icnet.data.labels import CITYSCAPES_CLASS_NAMES, trainid_to_labelid_lut
from icnet.image_io import write_png

_ID = {name: train_id for train_id, name in enumerate(CITYSCAPES_CLASS_NAMES)}
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (
    _ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN = (_ID[n] for n in ("pole", "traffic light", "traffic sign"))
VEGETATION, TERRAIN, SKY = (_ID[n] for n in ("vegetation", "terrain", "sky"))
PERSON, RIDER, CAR, TRUCK, BUS = (_ID[n] for n in ("person", "rider", "car", "truck", "bus"))
TRAIN, MOTORCYCLE, BICYCLE = (_ID[n] for n in ("train", "motorcycle", "bicycle"))

SPLITS = ("train", "val", "test")

# Camera: normalized focal lengths (image width = image height = 1); square pixels at H:W = 1:2.
FOCAL_U = 0.75
FOCAL_V = 1.5
CAMERA_HEIGHT = 1.5

Color = tuple[float, float, float]
Point = tuple[float, float, float]

# Ground materials, their trainIds, and the curb width in metres.
_GROUND_ROAD, _GROUND_PAVING, _GROUND_CURB, _GROUND_GRASS, _GROUND_FACADE = range(5)
_GROUND_LABELS = np.array([ROAD, SIDEWALK, SIDEWALK, TERRAIN, BUILDING], np.uint8)
_CURB = 0.22

# Facade / plane patterns.
_PLAIN, _WINDOWS, _LATTICE, _PANELS, _LEAFY = range(5)

_CAR_COLORS = ((235, 235, 235), (25, 25, 28), (160, 163, 168), (95, 98, 104), (150, 20, 25),
               (25, 50, 120), (30, 70, 45), (200, 170, 40), (180, 160, 130), (90, 30, 30),
               (60, 110, 160))
_BUS_COLORS = ((200, 30, 30), (230, 190, 30), (230, 230, 225), (30, 80, 160), (40, 130, 70),
               (230, 120, 30))
_TRAM_COLORS = ((230, 230, 220), (200, 40, 40), (240, 200, 40), (40, 90, 170), (60, 150, 90))
_CARGO_COLORS = ((235, 235, 235), (190, 190, 195), (150, 40, 40), (40, 70, 140), (230, 200, 60))
_CLOTHES = ((30, 30, 35), (40, 50, 90), (150, 30, 30), (200, 200, 190), (90, 70, 50),
            (60, 90, 60), (200, 150, 40), (110, 110, 120), (170, 90, 140))
_SKIN = ((230, 190, 160), (200, 150, 110), (140, 95, 65), (95, 65, 45))
_FACADES = ((200, 190, 170), (170, 160, 150), (150, 80, 60), (220, 215, 205), (120, 120, 125),
            (190, 170, 120), (160, 110, 90), (180, 190, 200))
_WALLS = ((170, 165, 155), (140, 130, 120), (150, 90, 70), (200, 195, 185), (110, 110, 115))
_FENCES = ((90, 90, 95), (40, 70, 50), (200, 200, 200), (120, 90, 60))
_POLES = ((120, 120, 125), (70, 75, 80), (40, 60, 45), (150, 150, 150))
_LEAVES = ((60, 100, 40), (45, 85, 35), (80, 115, 50), (35, 70, 40), (95, 120, 60))
_GRASS = ((120, 150, 70), (135, 160, 85), (150, 140, 90), (105, 135, 60))
_PAVING = ((150, 150, 150), (175, 170, 160), (160, 130, 120), (130, 130, 135), (185, 180, 170))
_HAIR = ((30, 25, 20), (90, 60, 30), (200, 180, 120))
_DARK = (28.0, 28.0, 30.0)
_GLASS = (45.0, 55.0, 70.0)
_METAL = (140.0, 140.0, 145.0)
_WHITE = (235.0, 235.0, 230.0)
_RED_LAMP = (200.0, 30.0, 30.0)
_HEADLAMP = (240.0, 238.0, 215.0)

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
_FINE_AMP, _MID_AMP, _COARSE_AMP = np.ascontiguousarray(_AMPLITUDES.T)


class _Shape(NamedTuple):
    """One drawable primitive in world coordinates (metres).

    kind: "poly" (points are the corners), "ellipse" / "ring" (points are the centre and
    (rx, ry, 0) radii in a plane facing the camera), or "line" (a thick polyline).
    """

    kind: str
    points: tuple[Point, ...]
    label: int
    color: Color
    width: float = 0.0


class _Object(NamedTuple):
    depth: float
    shapes: list[_Shape]


@dataclass(frozen=True)
class _Segments:
    """Vertical structures along a horizontal world coordinate t, piecewise constant."""

    breaks: np.ndarray   # (n + 1,) ascending t boundaries
    height: np.ndarray   # (n,) metres; 0 = nothing
    label: np.ndarray    # (n,) trainIds
    color: np.ndarray    # (n, 3)
    pattern: np.ndarray  # (n,) one of _PLAIN, _WINDOWS, _LATTICE, _PANELS, _LEAFY
    detail: np.ndarray   # (n, 3) glass / see-through tint colour
    grid: np.ndarray     # (n, 4) pattern cell along t, fill fraction, cell height, fill fraction


class _Segment(NamedTuple):
    t0: float
    t1: float
    height: float
    label: int
    color: Color
    pattern: int = _PLAIN
    detail: Color = (0.0, 0.0, 0.0)
    grid: tuple[float, float, float, float] = (1.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class _Side:
    """One side of the street; distances are |X| from the camera in metres."""

    sign: int
    road_edge: float
    strip: float  # width of the grass strip between curb and sidewalk (0 = none)
    sidewalk_outer: float
    facade: float
    facades: _Segments
    fronts: _Segments
    verge_breaks: np.ndarray
    verge_label: np.ndarray


@dataclass(frozen=True)
class _Street:
    road_left: float
    road_right: float
    lane_centers: tuple[float, ...]
    dashed_marks: tuple[float, ...]
    solid_marks: tuple[float, ...]
    rail_center: float | None
    crosswalk: tuple[float, float] | None
    sides: tuple[_Side, _Side]


@dataclass(frozen=True)
class _Look:
    """Per-image colours of the background and the global colour transform."""

    ground: np.ndarray  # (5, 3) colour per ground material (_GROUND_*)
    mark: Color
    rail: Color
    sky_top: Color
    sky_horizon: Color
    cloudiness: float
    transform: np.ndarray  # (3, 3) applied as rgb @ transform
    offset: float
    blur: float  # in units of image height / 256


@dataclass(frozen=True)
class _Scene:
    u_vp: float
    v_h: float
    street: _Street
    z_end: float
    end: _Segments
    objects: list[_Object]
    look: _Look


# --------------------------------------------------------------------------- sampling helpers


def _pick(rng: np.random.Generator, palette: Sequence[Color], spread: float = 15.0) -> Color:
    """A palette colour with a random per-channel variation."""
    base = palette[int(rng.integers(len(palette)))]
    noise = rng.uniform(-spread, spread, 3).tolist()
    return tuple(min(255.0, max(0.0, c + n)) for c, n in zip(base, noise))


def _shade(color: Color, factor: float) -> Color:
    return tuple(min(255.0, c * factor) for c in color)


def _segments(rows: Sequence[_Segment]) -> _Segments:
    """Packs contiguous segments into arrays."""
    return _Segments(
        breaks=np.array([rows[0].t0] + [r.t1 for r in rows], np.float32),
        height=np.array([r.height for r in rows], np.float32),
        label=np.array([r.label for r in rows], np.uint8),
        color=np.array([r.color for r in rows], np.float32),
        pattern=np.array([r.pattern for r in rows], np.int8),
        detail=np.array([r.detail for r in rows], np.float32),
        grid=np.array([r.grid for r in rows], np.float32))


def _building(rng: np.random.Generator, t0: float, t1: float, tall: float) -> _Segment:
    color = _pick(rng, _FACADES, 20)
    glass = _shade(_pick(rng, (_GLASS, (70, 75, 80), (120, 130, 140)), 12), rng.uniform(0.8, 1.3))
    grid = (rng.uniform(2.2, 4.0), rng.uniform(0.35, 0.65),  # window pitch, width fraction
            rng.uniform(2.9, 3.6), rng.uniform(0.4, 0.65))   # floor height, height fraction
    return _Segment(t0, t1, rng.uniform(0.4, 1.0) * tall, BUILDING, color, _WINDOWS, glass, grid)


def _park(rng: np.random.Generator, t0: float, t1: float) -> _Segment:
    return _Segment(t0, t1, rng.uniform(4.0, 11.0), VEGETATION, _pick(rng, _LEAVES), _LEAFY)


def _sample_facades(rng: np.random.Generator, t0: float, t1: float, length: tuple[float, float],
                    tall: float) -> _Segments:
    """Contiguous buildings and park strips along [t0, t1); farther ones (t > 0) are longer."""
    rows, t = [], t0
    while t < t1:
        t_next = min(t + rng.uniform(*length) * (1.0 + max(t, 0.0) / 50.0), t1)
        park = rng.random() < 0.15
        rows.append(_park(rng, t, t_next) if park else _building(rng, t, t_next, tall))
        t = t_next
    return _segments(rows)


def _front_element(rng: np.random.Generator, t0: float, t1: float) -> _Segment:
    kind = rng.choice(3, p=(0.4, 0.4, 0.2))
    if kind == 0:
        return _Segment(t0, t1, rng.uniform(0.8, 3.0), WALL, _pick(rng, _WALLS), _PANELS,
                        grid=(rng.uniform(1.5, 3.0), 0.03, rng.uniform(0.3, 0.7), 0.1))
    if kind == 1:
        return _Segment(t0, t1, rng.uniform(1.0, 2.2), FENCE, _pick(rng, _FENCES), _LATTICE,
                        detail=(rng.uniform(0.55, 0.8),) * 3,
                        grid=(rng.uniform(0.2, 0.45), rng.uniform(0.25, 0.45), 2.5, 0.05))
    return _Segment(t0, t1, rng.uniform(0.8, 1.8), VEGETATION, _pick(rng, _LEAVES), _LEAFY)


def _sample_fronts(rng: np.random.Generator) -> _Segments:
    """Walls, fences and hedges with gaps along the first ~90 m of one side."""
    def gap(t0: float, t1: float) -> _Segment:
        return _Segment(t0, t1, 0.0, WALL, (0.0, 0.0, 0.0))  # height 0: nothing stands here

    first = rng.uniform(0.0, 8.0)
    rows, t = [gap(0.0, first)], first
    while t < 90.0:
        t_next = t + rng.uniform(6.0, 30.0)
        t_gap = t_next + rng.uniform(2.0, 20.0)
        rows += [_front_element(rng, t, t_next), gap(t_next, t_gap)]
        t = t_gap
    return _segments(rows)


def _sample_verge(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Alternating grass / paved stretches between sidewalk and facade: (breaks, labels)."""
    breaks, labels, t = [0.0], [], 0.0
    while t < 400.0:
        t += rng.uniform(5.0, 30.0)
        breaks.append(t)
        labels.append(TERRAIN if rng.random() < 0.65 else SIDEWALK)
    return np.array(breaks, np.float32), np.array(labels, np.uint8)


def _sample_side(rng: np.random.Generator, sign: int, road_edge: float, z_end: float) -> _Side:
    strip = rng.uniform(0.8, 2.5) if rng.random() < 0.5 else 0.0
    sidewalk_outer = road_edge + _CURB + strip + rng.uniform(2.0, 5.0)
    verge = 0.0 if rng.random() < 0.2 else rng.uniform(1.0, 4.0)
    verge_breaks, verge_label = _sample_verge(rng)
    return _Side(sign, road_edge, strip, sidewalk_outer, sidewalk_outer + verge,
                 _sample_facades(rng, 0.0, z_end, (8.0, 30.0), 30.0), _sample_fronts(rng),
                 verge_breaks, verge_label)


def _sample_street(rng: np.random.Generator, z_end: float) -> _Street:
    lanes = int(rng.integers(2, 5))
    lane_width = rng.uniform(3.0, 3.7)
    camera_lane = int(rng.integers(lanes))
    left = -(camera_lane + 0.5) * lane_width
    right = left + lanes * lane_width
    centers = tuple(left + (j + 0.5) * lane_width for j in range(lanes))
    inner = tuple(left + j * lane_width for j in range(1, lanes))
    solid = (left + 0.3, right - 0.3) if rng.random() < 0.5 else ()
    rail = centers[int(rng.integers(lanes))] if rng.random() < 0.5 else None
    crosswalk = None
    if rng.random() < 0.3:
        start = rng.uniform(8.0, 30.0)
        crosswalk = (start, start + rng.uniform(3.0, 5.0))
    sides = (_sample_side(rng, -1, -left, z_end), _sample_side(rng, 1, right, z_end))
    return _Street(left, right, centers, inner, solid, rail, crosswalk, sides)


def _rotation_about_gray(angle: float) -> np.ndarray:
    """Hue rotation: rotates RGB vectors by `angle` radians about the gray axis."""
    axis = np.ones(3) / math.sqrt(3.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    cos, sin = math.cos(angle), math.sin(angle)
    return np.eye(3) * cos + sin * cross + (1 - cos) * np.outer(axis, axis)


def _sample_look(rng: np.random.Generator) -> _Look:
    paving = _pick(rng, _PAVING)
    asphalt = _shade(_pick(rng, ((82, 82, 84),), 5), rng.uniform(0.75, 1.25))
    ground = np.array([asphalt, paving, _shade(paving, rng.uniform(1.05, 1.25)),
                       _pick(rng, _GRASS), _pick(rng, _FACADES)], np.float32)
    overcast = rng.random() < 0.35
    if overcast:
        top = _shade(_pick(rng, ((150, 155, 165),), 15), rng.uniform(0.9, 1.2))
        horizon = _shade(top, 1.15)
    else:
        top = _pick(rng, ((70, 120, 200),), 20)
        horizon = _pick(rng, ((185, 205, 230),), 15)
    saturation = rng.uniform(0.75, 1.2)
    desaturate = saturation * np.eye(3) + (1 - saturation) * np.full((3, 3), 1 / 3)
    contrast = rng.uniform(0.8, 1.2)
    gains = np.diag(rng.uniform(0.93, 1.07, 3))
    matrix = contrast * gains @ _rotation_about_gray(rng.uniform(-0.15, 0.15)) @ desaturate
    return _Look(ground=ground, mark=_pick(rng, ((225, 225, 220), (215, 190, 90)), 10),
                 rail=_pick(rng, ((150, 140, 130),), 15), sky_top=top, sky_horizon=horizon,
                 cloudiness=rng.uniform(0.0, 1.0), transform=matrix.T.astype(np.float32),
                 offset=128.0 * (1 - contrast) + rng.uniform(-25.0, 25.0),
                 blur=rng.uniform(0.3, 0.6))


# --------------------------------------------------------------------------- object builders


def _front(x0: float, x1: float, y0: float, y1: float, z: float, label: int,
           color: Color) -> _Shape:
    """A rectangle in the plane of constant Z (facing the camera)."""
    return _Shape("poly", ((x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)), label, color)


def _flank(x: float, y0: float, y1: float, z0: float, z1: float, label: int,
           color: Color) -> _Shape:
    """A rectangle in the plane of constant X (a side face), from depth z0 to z1."""
    return _Shape("poly", ((x, y0, z0), (x, y1, z0), (x, y1, z1), (x, y0, z1)), label, color)


def _disc(x: float, y: float, z: float, rx: float, ry: float, label: int, color: Color) -> _Shape:
    """An ellipse in the plane of constant Z."""
    return _Shape("ellipse", ((x, y, z), (rx, ry, 0.0)), label, color)


def _profile(points: Sequence[tuple[float, float]], x: float, z: float, d: float, label: int,
             color: Color) -> _Shape:
    """A polygon of a side-view figure from (forward offset, height) points; d = +-1 facing."""
    return _Shape("poly", tuple((x + d * a, b, z) for a, b in points), label, color)


def _limb(a: tuple[float, float], b: tuple[float, float], x: float, z: float, d: float,
          width: float, label: int, color: Color) -> _Shape:
    """A thick line between two (forward offset, height) points of a side-view figure."""
    return _Shape("line", ((x + d * a[0], a[1], z), (x + d * b[0], b[1], z)), label, color, width)


def _visible_side(x0: float, x1: float) -> float | None:
    """X of the side face of an X-extent that the camera (at X = 0) sees, if any."""
    if x1 < 0:
        return x1
    return x0 if x0 > 0 else None


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, label: int,
         color: Color) -> list[_Shape]:
    """The visible faces of an axis-aligned box, far faces first."""
    shapes = []
    side = _visible_side(x0, x1)
    if side is not None:
        shapes.append(_flank(side, y0, y1, z0, z1, label, _shade(color, 0.8)))
    if y1 < CAMERA_HEIGHT:
        top = ((x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1))
        shapes.append(_Shape("poly", top, label, _shade(color, 1.1)))
    shapes.append(_front(x0, x1, y0, y1, z0, label, color))
    return shapes


def _side_wheel(x: float, radius: float, z: float, label: int) -> list[_Shape]:
    """A wheel on a side face: a projected circle in the plane of constant X, with a hub."""
    def circle(r: float) -> tuple[Point, ...]:
        return tuple((x, radius + r * math.sin(a), z + r * math.cos(a))
                     for a in np.linspace(0, 2 * math.pi, 12, endpoint=False))
    return [_Shape("poly", circle(radius), label, _DARK),
            _Shape("poly", circle(radius * 0.45), label, _METAL)]


def _rear_stubs(x0: float, x1: float, z: float, height: float, label: int) -> list[_Shape]:
    """The two wheels seen below the near face of a vehicle."""
    return [_front(x0 + 0.08, x0 + 0.38, 0.0, height, z, label, _DARK),
            _front(x1 - 0.38, x1 - 0.08, 0.0, height, z, label, _DARK)]


def _tail_lights(x0: float, x1: float, y: float, z: float, label: int) -> list[_Shape]:
    return [_front(x0 + 0.05, x0 + 0.3, y, y + 0.18, z, label, _RED_LAMP),
            _front(x1 - 0.3, x1 - 0.05, y, y + 0.18, z, label, _RED_LAMP)]


def _window_row(side: float, y0: float, y1: float, z0: float, z1: float, pitch: float,
                label: int, body: Color) -> list[_Shape]:
    """A glass band on a side face split into windows by pillars."""
    shapes = [_flank(side, y0, y1, z0, z1, label, _GLASS)]
    for z in np.arange(z0 + pitch, z1 - 0.3, pitch):
        shapes.append(_flank(side, y0, y1, z, z + 0.18, label, _shade(body, 0.8)))
    return shapes


def _car(rng: np.random.Generator, x: float, z0: float) -> _Object:
    """A car seen from behind: body, glass cabin, wheels, tail lights and number plate."""
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95)
    height = rng.uniform(1.4, 1.75)
    color = _pick(rng, _CAR_COLORS, 12)
    x0, x1, z1 = x - width / 2, x + width / 2, z0 + length
    belt = 0.58 * height
    shapes = _rear_stubs(x0, x1, z0 + 0.5, 0.35, CAR)
    shapes += _box(x0, x1, 0.28, belt, z0, z1, CAR, color)
    side = _visible_side(x0, x1)
    if side is not None:
        shapes += _side_wheel(side, 0.33, z0 + 0.8, CAR) + _side_wheel(side, 0.33, z1 - 0.85, CAR)
    cabin_z = z0 + 0.22 * length
    cabin = _box(x0 + 0.12, x1 - 0.12, belt, height, cabin_z, z1 - 0.3 * length, CAR, color)
    if side is not None:
        cabin[0] = cabin[0]._replace(color=_GLASS)
    shapes += cabin
    shapes.append(_front(x0 + 0.22, x1 - 0.22, belt + 0.06, height - 0.07, cabin_z, CAR, _GLASS))
    shapes += _tail_lights(x0, x1, belt - 0.25, z0, CAR)
    shapes.append(_front(x - 0.26, x + 0.26, 0.42, 0.54, z0, CAR, _WHITE))
    return _Object(z0, shapes)


def _truck(rng: np.random.Generator, x: float, z0: float) -> _Object:
    """A box truck seen from behind: a tall cargo box in front of the cab."""
    cargo_len, cab_len = rng.uniform(5.0, 8.0), 2.3
    height = rng.uniform(3.2, 3.9)
    x0, x1 = x - 1.22, x + 1.22
    cargo, cab = _pick(rng, _CARGO_COLORS), _pick(rng, _CAR_COLORS)
    z_cab = z0 + cargo_len
    shapes = _box(x0 + 0.05, x1 - 0.05, 0.5, 2.9, z_cab, z_cab + cab_len, TRUCK, cab)
    side = _visible_side(x0, x1)
    if side is not None:
        shapes.append(_flank(side, 1.7, 2.6, z_cab + 0.9, z_cab + 2.0, TRUCK, _GLASS))
    shapes += _rear_stubs(x0, x1, z0 + 1.0, 0.6, TRUCK)
    shapes += _box(x0, x1, 0.9, height, z0, z_cab, TRUCK, cargo)
    if side is not None:
        for z in (z0 + 1.0, z0 + 2.2, z_cab + 1.3):
            shapes += _side_wheel(side, 0.5, z, TRUCK)
    shapes.append(_front(x - 0.04, x + 0.04, 1.0, height - 0.1, z0, TRUCK, _DARK))
    shapes.append(_front(x0, x1, 0.55, 0.9, z0, TRUCK, _DARK))
    shapes += _tail_lights(x0, x1, 0.6, z0, TRUCK)
    return _Object(z0, shapes)


def _bus(rng: np.random.Generator, x: float, z0: float) -> _Object:
    """A city bus seen from behind, with a row of side windows."""
    length, height = rng.uniform(11.0, 13.5), rng.uniform(2.9, 3.2)
    color = _pick(rng, _BUS_COLORS)
    x0, x1, z1 = x - 1.27, x + 1.27, z0 + length
    shapes = _rear_stubs(x0, x1, z0 + 0.6, 0.5, BUS)
    shapes += _box(x0, x1, 0.3, height, z0, z1, BUS, color)
    side = _visible_side(x0, x1)
    if side is not None:
        shapes += _window_row(side, 1.2, 2.6, z0 + 0.5, z1 - 1.0, 1.5, BUS, color)
        shapes += _side_wheel(side, 0.5, z0 + 2.6, BUS) + _side_wheel(side, 0.5, z1 - 2.7, BUS)
    shapes.append(_front(x0 + 0.2, x1 - 0.2, 1.8, height - 0.25, z0, BUS, _GLASS))
    shapes.append(_front(x0, x1, 0.3, 0.6, z0, BUS, _DARK))
    shapes += _tail_lights(x0, x1, 0.8, z0, BUS)
    return _Object(z0, shapes)


def _tram(rng: np.random.Generator, x: float, z0: float) -> _Object:
    """A long tram on rails: skirt, stripe, window row, big windscreen and a pantograph."""
    length, height = rng.uniform(25.0, 38.0), rng.uniform(3.3, 3.6)
    color, stripe = _pick(rng, _TRAM_COLORS), _pick(rng, _TRAM_COLORS, 30)
    x0, x1, z1 = x - 1.3, x + 1.3, z0 + length
    pantograph = ((x, height, z0 + 6.0), (x, height + 0.9, z0 + 7.0), (x, height + 0.9, z0 + 5.0))
    shapes = [_Shape("line", pantograph, TRAIN, _DARK, 0.12)]
    shapes += _box(x0, x1, 0.35, height, z0, z1, TRAIN, color)
    side = _visible_side(x0, x1)
    if side is not None:
        shapes.append(_flank(side, 0.35, 0.65, z0, z1, TRAIN, _DARK))
        shapes.append(_flank(side, 0.75, 1.0, z0, z1, TRAIN, stripe))
        shapes += _window_row(side, 1.15, 2.7, z0 + 1.5, z1 - 0.5, 2.0, TRAIN, color)
    shapes.append(_front(x0 + 0.15, x1 - 0.15, 1.3, 2.85, z0, TRAIN, _GLASS))
    shapes.append(_front(x0 + 0.5, x1 - 0.5, 2.95, 3.2, z0, TRAIN, (230.0, 150.0, 30.0)))
    shapes.append(_front(x0, x1, 0.75, 1.0, z0, TRAIN, stripe))
    for lamp in (x0 + 0.35, x1 - 0.35):
        shapes.append(_disc(lamp, 1.15, z0, 0.12, 0.1, TRAIN, _HEADLAMP))
    return _Object(z0, shapes)


def _seated_rider(rng: np.random.Generator, x: float, z: float, d: float,
                  hip: tuple[float, float], foot: tuple[float, float],
                  hands: tuple[float, float], helmet: bool) -> list[_Shape]:
    """A side-view rider: legs to the pedals/pegs, torso leaning to the handlebar, head."""
    jacket, trousers = _pick(rng, _CLOTHES), _pick(rng, _CLOTHES)
    knee = (foot[0] + 0.15, (hip[1] + foot[1]) / 2 + 0.12)
    shoulder = (hip[0] + 0.2, hip[1] + 0.58)
    head = (shoulder[0] + 0.06, shoulder[1] + 0.2)
    head_color = _pick(rng, _CAR_COLORS) if helmet else _pick(rng, _SKIN, 8)
    head_width = 0.13 if helmet else 0.11
    return [_limb(hip, knee, x, z, d, 0.17, RIDER, trousers),
            _limb(knee, foot, x, z, d, 0.13, RIDER, trousers),
            _limb(hip, shoulder, x, z, d, 0.36, RIDER, jacket),
            _limb(shoulder, hands, x, z, d, 0.11, RIDER, jacket),
            _disc(x + d * head[0], head[1], z, head_width, 0.14, RIDER, head_color)]


def _motorcycle(rng: np.random.Generator, x: float, z: float, rider: bool) -> _Object:
    """A side-view motorcycle (solid wheels, engine, fairing), optionally with a rider."""
    d = float(rng.choice((-1.0, 1.0)))
    color = _pick(rng, _CAR_COLORS, 20)
    shapes = []
    for wheel in (x - 0.72, x + 0.72):
        shapes.append(_disc(wheel, 0.32, z, 0.32, 0.32, MOTORCYCLE, _DARK))
        shapes.append(_disc(wheel, 0.32, z, 0.12, 0.12, MOTORCYCLE, _METAL))
    engine = ((-0.2, 0.3), (0.3, 0.3), (0.35, 0.6), (-0.25, 0.62))
    body = ((-0.8, 0.72), (-0.35, 0.56), (0.35, 0.52), (0.62, 0.8), (0.45, 1.0), (0.05, 0.98),
            (-0.35, 0.88), (-0.82, 0.88))
    shapes.append(_profile(engine, x, z, d, MOTORCYCLE, (60.0, 60.0, 62.0)))
    shapes.append(_limb((0.72, 0.32), (0.5, 1.08), x, z, d, 0.08, MOTORCYCLE, _METAL))
    shapes.append(_profile(body, x, z, d, MOTORCYCLE, color))
    shapes.append(_disc(x + d * 0.6, 0.88, z, 0.08, 0.08, MOTORCYCLE, _HEADLAMP))
    if rider:
        shapes += _seated_rider(rng, x, z, d, hip=(-0.3, 1.0), foot=(0.0, 0.42),
                                hands=(0.48, 1.08), helmet=True)
    return _Object(z, shapes)


def _bicycle(rng: np.random.Generator, x: float, z: float, rider: bool) -> _Object:
    """A side-view bicycle (ring wheels, diamond frame), optionally with a rider."""
    d = float(rng.choice((-1.0, 1.0)))
    frame = _pick(rng, _CAR_COLORS, 25)
    rear, front, crank = (-0.52, 0.34), (0.52, 0.34), (0.0, 0.32)
    seat, head = (-0.16, 0.86), (0.38, 0.9)
    shapes = [_Shape("ring", ((x + d * hub[0], hub[1], z), (0.34, 0.34, 0.0)), BICYCLE, _DARK, 0.1)
              for hub in (rear, front)]
    tubes = ((rear, crank), (crank, seat), (rear, seat), (seat, head), (head, crank), (head, front))
    shapes += [_limb(a, b, x, z, d, 0.075, BICYCLE, frame) for a, b in tubes]
    shapes.append(_limb(head, (0.3, 1.04), x, z, d, 0.07, BICYCLE, _DARK))
    shapes.append(_limb((-0.26, 0.9), (-0.04, 0.9), x, z, d, 0.08, BICYCLE, _DARK))
    if rider:
        shapes += _seated_rider(rng, x, z, d, hip=(-0.16, 0.95), foot=(0.08, 0.22),
                                hands=(0.3, 1.04), helmet=False)
    return _Object(z, shapes)


def _person(rng: np.random.Generator, x: float, z: float) -> _Object:
    """A pedestrian facing the camera (or away), possibly mid-stride."""
    height = rng.uniform(1.55, 1.95)
    hip, shoulder = 0.52 * height, 0.81 * height
    stride = rng.uniform(0.0, 0.14)
    shirt, trousers = _pick(rng, _CLOTHES), _pick(rng, _CLOTHES)
    skin = _pick(rng, _SKIN, 8)
    shapes = []
    for s in (-1.0, 1.0):
        leg = ((x + s * 0.02, hip, z), (x + s * 0.17, hip, z), (x + s * (0.13 + stride), 0.0, z),
               (x + s * (0.03 + stride), 0.0, z))
        shapes.append(_Shape("poly", leg, PERSON, trousers))
        arm = ((x + s * 0.2, shoulder - 0.05, z), (x + s * (0.27 + stride / 2), hip - 0.02, z))
        shapes.append(_Shape("line", arm, PERSON, shirt, 0.1))
    torso = ((x - 0.22, shoulder, z), (x + 0.22, shoulder, z), (x + 0.18, hip - 0.06, z),
             (x - 0.18, hip - 0.06, z))
    shapes.append(_Shape("poly", torso, PERSON, shirt))
    shapes.append(_disc(x, 0.91 * height, z, 0.095, 0.12, PERSON, skin))
    shapes.append(_disc(x, 0.95 * height, z, 0.1, 0.07, PERSON, _pick(rng, _HAIR, 10)))
    return _Object(z, shapes)


def _pole(x: float, z: float, height: float, width: float, color: Color) -> _Shape:
    return _front(x - width / 2, x + width / 2, 0.0, height, z, POLE, color)


def _traffic_light(rng: np.random.Generator, x: float, y_top: float, z: float) -> list[_Shape]:
    """A dark housing with three lamps, one of them lit (unless seen from behind)."""
    housing = _pick(rng, ((35, 35, 38), (60, 60, 40)), 8)
    shapes = [_front(x - 0.22, x + 0.22, y_top - 1.0, y_top, z, LIGHT, housing)]
    if rng.random() < 0.25:
        return shapes
    lit = int(rng.integers(3))
    for k, color in enumerate(((255.0, 50.0, 40.0), (255.0, 200.0, 30.0), (60.0, 255.0, 130.0))):
        shapes.append(_disc(x, y_top - 0.18 - 0.32 * k, z, 0.12, 0.12, LIGHT,
                            color if k == lit else _shade(color, 0.3)))
    return shapes


def _sign_plate(rng: np.random.Generator, x: float, y: float, z: float) -> list[_Shape]:
    """A traffic sign face: round, triangular, rectangular or diamond, with a border."""
    kind = int(rng.integers(4))
    r = rng.uniform(0.32, 0.45)
    red, blue, yellow = (200.0, 30.0, 35.0), (30.0, 80.0, 170.0), (240.0, 200.0, 30.0)
    if kind == 0:
        return [_disc(x, y, z, r, r, SIGN, red),
                _disc(x, y, z, 0.72 * r, 0.72 * r, SIGN, _WHITE if rng.random() < 0.5 else blue)]
    if kind == 1:
        outer = ((x - r, y - 0.8 * r, z), (x + r, y - 0.8 * r, z), (x, y + r, z))
        inner = ((x - 0.6 * r, y - 0.55 * r, z), (x + 0.6 * r, y - 0.55 * r, z),
                 (x, y + 0.5 * r, z))
        return [_Shape("poly", outer, SIGN, red), _Shape("poly", inner, SIGN, _WHITE)]
    if kind == 2:
        return [_front(x - r, x + r, y - 0.7 * r, y + 0.7 * r, z, SIGN, blue),
                _front(x - 0.3 * r, x + 0.3 * r, y - 0.4 * r, y + 0.4 * r, z, SIGN, _WHITE)]
    diamond = ((x - r, y, z), (x, y - r, z), (x + r, y, z), (x, y + r, z))
    small = tuple((x + 0.6 * (px - x), y + 0.6 * (py - y), z) for px, py, _ in diamond)
    return [_Shape("poly", diamond, SIGN, _WHITE), _Shape("poly", small, SIGN, yellow)]


def _signal_pole(rng: np.random.Generator, x: float, z: float, toward_road: float) -> _Object:
    """A pole carrying a traffic light, optionally with a mast arm and a second light."""
    color = _pick(rng, _POLES, 10)
    height = rng.uniform(3.6, 5.5)
    shapes = [_pole(x, z, height, 0.3, color)]
    if rng.random() < 0.5:
        reach = x + toward_road * rng.uniform(2.5, 5.0)
        arm = ((x, height - 0.1, z), (reach, height - 0.1, z))
        shapes.append(_Shape("line", arm, POLE, color, 0.2))
        shapes += _traffic_light(rng, reach, height - 0.15, z)
    shapes += _traffic_light(rng, x, rng.uniform(2.8, height), z - 0.2)
    if rng.random() < 0.4:
        shapes += _sign_plate(rng, x, 2.2, z - 0.2)
    return _Object(z - 0.2, shapes)


def _sign_pole(rng: np.random.Generator, x: float, z: float) -> _Object:
    """A short pole with one or two traffic signs."""
    height = rng.uniform(2.6, 3.4)
    shapes = [_pole(x, z, height, 0.25, _pick(rng, _POLES, 10))]
    shapes += _sign_plate(rng, x, height - 0.35, z - 0.1)
    if rng.random() < 0.4:
        shapes += _sign_plate(rng, x, height - 1.2, z - 0.1)
    return _Object(z - 0.1, shapes)


def _lamp_post(rng: np.random.Generator, x: float, z: float, toward_road: float) -> _Object:
    """A tall street lamp with an arm reaching over the road (all pole)."""
    color = _pick(rng, _POLES, 10)
    height = rng.uniform(6.5, 9.0)
    reach = x + toward_road * rng.uniform(1.2, 2.5)
    lamp_end = reach + toward_road * 0.7
    arm = ((x, height - 0.3, z), (reach, height, z))
    return _Object(z, [_pole(x, z, height, 0.3, color),
                       _Shape("line", arm, POLE, color, 0.15),
                       _front(min(reach, lamp_end), max(reach, lamp_end), height - 0.2,
                              height + 0.05, z, POLE, _shade(color, 0.7))])


def _tree(rng: np.random.Generator, x: float, z: float) -> _Object:
    """A trunk and a canopy of overlapping leafy blobs (all vegetation, as in Cityscapes)."""
    trunk_h, radius = rng.uniform(2.0, 3.5), rng.uniform(1.3, 2.8)
    trunk_w = rng.uniform(0.3, 0.45)
    bark = _pick(rng, ((90, 70, 50), (70, 65, 55)), 10)
    shapes = [_front(x - trunk_w / 2, x + trunk_w / 2, 0.0, trunk_h + radius, z, VEGETATION, bark)]
    for _ in range(int(rng.integers(4, 8))):
        cx = x + rng.uniform(-0.6, 0.6) * radius
        cy = trunk_h + radius * rng.uniform(0.5, 1.3)
        size = radius * rng.uniform(0.5, 0.85)
        shapes.append(_disc(cx, cy, z, size, size * rng.uniform(0.8, 1.1), VEGETATION,
                            _pick(rng, _LEAVES)))
    return _Object(z, shapes)


# --------------------------------------------------------------------------- object placement


class _Lanes:
    """Occupied depth intervals per lane, to keep road users from overlapping."""

    def __init__(self, centers: Sequence[float]) -> None:
        self.centers = centers
        self.camera_lane = int(np.argmin(np.abs(centers)))
        self.taken: list[list[tuple[float, float]]] = [[] for _ in centers]

    def place(self, rng: np.random.Generator, lane: int, length: float, z_max: float,
              tries: int = 6) -> float | None:
        """A free start depth (<= z_max) in `lane` for an object `length` metres long, or None."""
        z_min = 8.0 if lane == self.camera_lane else 6.0
        for _ in range(tries):
            z0 = rng.uniform(z_min, z_max)
            if all(z0 + length + 2.0 < a or z0 > b + 2.0 for a, b in self.taken[lane]):
                self.taken[lane].append((z0, z0 + length))
                return z0
        return None


def _two_wheelers(rng: np.random.Generator, lanes: _Lanes) -> list[_Object]:
    """A motorcycle and a bicycle (each likely), with riders, in an outer lane near the curb."""
    objects = []
    for builder in (_motorcycle, _bicycle):
        if rng.random() < 0.85:
            outer = 0 if rng.random() < 0.5 else len(lanes.centers) - 1
            z0 = lanes.place(rng, outer, 2.0, 22.0)
            if z0 is not None:
                toward_curb = -1.0 if outer == 0 else 1.0
                x = lanes.centers[outer] + toward_curb * rng.uniform(0.3, 1.0)
                objects.append(builder(rng, x, z0, rider=True))
    return objects


def _road_users(rng: np.random.Generator, street: _Street) -> list[_Object]:
    """Two-wheelers, then the tram (on its rails), a truck, a bus and cars in lanes."""
    lanes = _Lanes(street.lane_centers)
    objects = _two_wheelers(rng, lanes)
    n = len(lanes.centers)
    wanted = []  # (builder, lane, length, farthest start depth)
    if street.rail_center is not None:
        wanted.append((_tram, lanes.centers.index(street.rail_center), 38.0, 40.0))
    if rng.random() < 0.65:
        wanted.append((_truck, int(rng.integers(n)), 10.5, 45.0))
    if rng.random() < 0.65:
        wanted.append((_bus, int(rng.integers(n)), 13.5, 45.0))
    wanted += [(_car, int(rng.integers(n)), 5.0, 70.0) for _ in range(int(rng.integers(2, 8)))]
    for builder, lane, length, z_max in wanted:
        z0 = lanes.place(rng, lane, length, z_max)
        if z0 is not None:
            objects.append(builder(rng, lanes.centers[lane] + rng.uniform(-0.3, 0.3), z0))
    return objects


def _sidewalk_x(rng: np.random.Generator, side: _Side, low: float, high: float) -> float:
    """A lateral position on `side`'s sidewalk, fraction `low`..`high` of its width outwards."""
    inner = side.road_edge + _CURB + side.strip
    return side.sign * (inner + rng.uniform(low, high) * (side.sidewalk_outer - inner))


def _curb_pole(rng: np.random.Generator, side: _Side, z: float, kind: int) -> _Object:
    """A signal pole (kind 0), sign pole (1) or street lamp (2) at the curb of `side`."""
    x = side.sign * (side.road_edge + 0.45)
    if kind == 0:
        return _signal_pole(rng, x, z, -side.sign)
    return _sign_pole(rng, x, z) if kind == 1 else _lamp_post(rng, x, z, -side.sign)


def _street_furniture(rng: np.random.Generator, street: _Street) -> list[_Object]:
    """Poles with lights and signs, lamps, trees, pedestrians and parked bicycles."""
    sides = street.sides
    first = int(rng.integers(2))
    objects = [_curb_pole(rng, sides[first], rng.uniform(7.0, 25.0), kind=0),
               _curb_pole(rng, sides[1 - first], rng.uniform(6.0, 25.0), kind=1)]
    for side in sides:
        for _ in range(int(rng.integers(0, 3))):
            objects.append(_curb_pole(rng, side, rng.uniform(6.0, 35.0), int(rng.integers(3))))
        for _ in range(int(rng.integers(0, 4))):
            objects.append(_tree(rng, _sidewalk_x(rng, side, 0.5, 0.85), rng.uniform(7.0, 70.0)))
        for _ in range(int(rng.integers(1, 4))):
            objects.append(_person(rng, _sidewalk_x(rng, side, 0.15, 0.9), rng.uniform(5.0, 40.0)))
        if rng.random() < 0.3:
            x = _sidewalk_x(rng, side, 0.4, 0.8)
            objects.append(_bicycle(rng, x, rng.uniform(6.0, 20.0), rider=False))
    if street.crosswalk is not None and rng.random() < 0.7:
        z = rng.uniform(*street.crosswalk)
        x = rng.uniform(street.road_left + 0.5, street.road_right - 0.5)
        objects.append(_person(rng, x, z))
    return objects


def _sample_end(rng: np.random.Generator) -> _Segments:
    """Buildings across the far end of the street (t = X at depth z_end)."""
    return _sample_facades(rng, -45.0, 45.0, (10.0, 30.0), 40.0)


def _sample_scene(rng: np.random.Generator) -> _Scene:
    u_vp, v_h = rng.uniform(0.4, 0.6), rng.uniform(0.36, 0.47)
    z_end = rng.uniform(120.0, 300.0)
    street = _sample_street(rng, z_end)
    end = _sample_end(rng)
    objects = _road_users(rng, street) + _street_furniture(rng, street)
    return _Scene(u_vp, v_h, street, z_end, end, objects, _sample_look(rng))


# --------------------------------------------------------------------------- rasterization


@dataclass
class _Canvas:
    label: np.ndarray  # (H, W) uint8 trainIds
    image: np.ndarray  # (H, W, 3) float32 RGB
    u: np.ndarray      # (W,) normalized column centres
    v: np.ndarray      # (H,) normalized row centres


def _new_canvas(height: int, width: int) -> _Canvas:
    return _Canvas(label=np.full((height, width), SKY, np.uint8),
                   image=np.empty((height, width, 3), np.float32),
                   u=(np.arange(width, dtype=np.float32) + 0.5) / width,
                   v=(np.arange(height, dtype=np.float32) + 0.5) / height)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _horizon_row(canvas: _Canvas, scene: _Scene) -> int:
    """The first image row below the horizon (the first ground row)."""
    return int(np.searchsorted(canvas.v, scene.v_h + 1e-4, side="right"))


def _paint_sky(canvas: _Canvas, scene: _Scene) -> None:
    """A vertical gradient from the zenith colour to the horizon colour above the horizon."""
    rows = _horizon_row(canvas, scene)
    t = (canvas.v[:rows] / scene.v_h)[:, None, None] ** 0.7
    top = np.array(scene.look.sky_top, np.float32)
    horizon = np.array(scene.look.sky_horizon, np.float32)
    canvas.image[:rows] = top + (horizon - top) * t


def _ground_materials(street: _Street, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Ground materials (_GROUND_*) of pixels from their lateral position x and row depth z."""
    left, right = street.sides

    def outward(side: _Side) -> list[float]:
        return [side.road_edge, side.road_edge + _CURB, side.road_edge + _CURB + side.strip,
                side.sidewalk_outer, side.facade]

    edges = np.array([-e for e in reversed(outward(left))] + outward(right), np.float32)
    bins = np.searchsorted(edges, x)
    table = np.empty((len(z), len(edges) + 1), np.uint8)
    table[:] = (_GROUND_FACADE, 0, _GROUND_PAVING, _GROUND_GRASS, _GROUND_CURB, _GROUND_ROAD,
                _GROUND_CURB, _GROUND_GRASS, _GROUND_PAVING, 0, _GROUND_FACADE)
    for column, side in ((1, left), (len(edges) - 1, right)):
        verge = np.clip(np.searchsorted(side.verge_breaks, z) - 1, 0, len(side.verge_label) - 1)
        grass = side.verge_label[verge] == TERRAIN
        table[:, column] = np.where(grass, _GROUND_GRASS, _GROUND_PAVING)
    return np.take_along_axis(table, bins, axis=1)


def _road_markings(street: _Street, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mask of lane marks, edge lines and crosswalk stripes on the road."""
    dashed = _frac(z / 9.0) < 0.4
    marks = np.zeros(x.shape, bool)
    for mark in street.dashed_marks:
        marks |= (np.abs(x - mark) < 0.075) & dashed[:, None]
    for mark in street.solid_marks:
        marks |= np.abs(x - mark) < 0.08
    if street.crosswalk is not None:
        rows = (z >= street.crosswalk[0]) & (z < street.crosswalk[1])
        on_road = (x > street.road_left) & (x < street.road_right)
        marks |= rows[:, None] & (_frac(x) < 0.5) & on_road
    return marks


def _paint_ground(canvas: _Canvas, scene: _Scene) -> None:
    """Road, curbs, sidewalks and verges below the horizon, with marks, rails and paving joints."""
    street, look = scene.street, scene.look
    r0 = _horizon_row(canvas, scene)
    z = FOCAL_V * CAMERA_HEIGHT / (canvas.v[r0:] - scene.v_h)
    x = (canvas.u - scene.u_vp)[None, :] * (z / FOCAL_U)[:, None]
    material = _ground_materials(street, z, x)
    image = np.take(look.ground, material, axis=0)
    near = int(np.searchsorted(-z, -30.0, side="right"))  # first row nearer than 30 m
    joints = (material[near:] == _GROUND_PAVING) & (
        (_frac(z[near:] / 0.9) < 0.06)[:, None] | (_frac(x[near:] / 0.9) < 0.06))
    np.multiply(image[near:], np.float32(0.85), out=image[near:], where=joints[..., None])
    if street.rail_center is not None:
        bed = np.abs(x - street.rail_center)
        np.multiply(image, np.float32(0.85), out=image, where=(bed < 1.1)[..., None])
        image[np.abs(bed - 0.72) < 0.05] = look.rail
    image[_road_markings(street, z, x)] = look.mark
    canvas.label[r0:] = np.take(_GROUND_LABELS, material)
    canvas.image[r0:] = image


def _bumps(t: np.ndarray) -> np.ndarray:
    """An irregular ±0.5 m height profile for hedges and park edges."""
    return 0.3 * np.sin(t * 1.7) + 0.2 * np.sin(t * 4.3 + 1.0)


def _plane_patterns(region: np.ndarray, segs: _Segments, seg: np.ndarray, t: np.ndarray,
                    y: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Colours of a vertical plane: base colours with windows, wall courses or fence lattice."""
    pattern = segs.pattern[seg]
    grid = segs.grid[seg]
    paint = np.broadcast_to(segs.color[seg], region.shape).copy()
    if (pattern == _WINDOWS).any():
        columns = (pattern == _WINDOWS) & (_frac(t / grid[:, 0]) < grid[:, 1])
        windows = columns & (_frac(y / grid[:, 2]) < grid[:, 3]) & (y > 3.2) & (y < height - 1.0)
        np.copyto(paint, np.broadcast_to(segs.detail[seg], paint.shape), where=windows[..., None])
    if (pattern == _PANELS).any():
        joints = (_frac(y / grid[:, 2]) < grid[:, 3]) | (_frac(t / grid[:, 0]) < grid[:, 1])
        courses = (pattern == _PANELS) & joints
        np.multiply(paint, np.float32(0.8), out=paint, where=courses[..., None])
    if (pattern == _LATTICE).any():
        cell = grid[:, 0]
        bars = (_frac((t + y) / cell) < grid[:, 1]) | (_frac((t - y) / cell) < grid[:, 1]) \
            | (_frac(t / grid[:, 2]) < grid[:, 3]) | (y > height - 0.08)
        see_through = (pattern == _LATTICE) & ~bars
        np.copyto(paint, region * segs.detail[seg], where=see_through[..., None])
    return paint


def _paint_plane(canvas: _Canvas, scene: _Scene, cols: np.ndarray, t: np.ndarray, depth: np.ndarray,
                 segs: _Segments) -> None:
    """Paints vertical structures standing on the ground along one plane.

    Args:
        canvas: the canvas to paint into.
        scene: the scene (for the camera).
        cols: (C,) ascending contiguous image columns the plane may cover.
        t: (C,) world coordinate along the plane for each column, metres.
        depth: (C,) depth of the plane at each column, metres.
        segs: what stands along the plane.
    """
    inside = (t >= segs.breaks[0]) & (t < segs.breaks[-1])
    seg = np.clip(np.searchsorted(segs.breaks, t, side="right") - 1, 0, len(segs.height) - 1)
    height = np.where(inside, segs.height[seg], 0.0)
    height = np.where(segs.pattern[seg] == _LEAFY, height + _bumps(t) * (height > 0), height)
    visible = np.nonzero(height > 0)[0]
    if len(visible) == 0:
        return
    keep = slice(visible[0], visible[-1] + 1)
    t, depth, seg, height = t[keep], depth[keep], seg[keep], height[keep]
    top = (scene.v_h - (height - CAMERA_HEIGHT) * FOCAL_V / depth).min()
    bottom = scene.v_h + CAMERA_HEIGHT * FOCAL_V / depth.min()
    rows = slice(int(np.searchsorted(canvas.v, top)), int(np.searchsorted(canvas.v, bottom)))
    y = CAMERA_HEIGHT - (canvas.v[rows, None] - scene.v_h) * (depth / FOCAL_V)
    mask = (y > 0) & (y <= height)
    columns = slice(cols[keep.start], cols[keep.stop - 1] + 1)
    region = canvas.image[rows, columns]
    paint = _plane_patterns(region, segs, seg, t, y, height)
    np.copyto(region, paint, where=mask[..., None])
    np.copyto(canvas.label[rows, columns], np.broadcast_to(segs.label[seg], mask.shape), where=mask)


def _paint_end(canvas: _Canvas, scene: _Scene) -> None:
    x = (canvas.u - scene.u_vp) * (scene.z_end / FOCAL_U)
    cols = np.arange(len(canvas.u))
    _paint_plane(canvas, scene, cols, x, np.full_like(x, scene.z_end), scene.end)


def _paint_side(canvas: _Canvas, scene: _Scene, side: _Side) -> None:
    """Facades, then the walls/fences/hedges in front of them, on one side of the street."""
    offset = side.sign * (canvas.u - scene.u_vp)
    for distance, segs in ((side.facade, side.facades), (side.sidewalk_outer + 0.05, side.fronts)):
        cols = np.nonzero(offset > FOCAL_U * distance / segs.breaks[-1])[0]
        if len(cols):
            depth = FOCAL_U * distance / offset[cols]
            _paint_plane(canvas, scene, cols, depth, depth, segs)


@dataclass(frozen=True)
class _Camera:
    """Projects world points (metres) to pixel coordinates of a height x width image."""

    u_vp: float
    v_h: float
    height: int
    width: int

    def point(self, x: float, y: float, z: float) -> tuple[float, float]:
        return ((self.u_vp + FOCAL_U * x / z) * self.width - 0.5,
                (self.v_h + FOCAL_V * (CAMERA_HEIGHT - y) / z) * self.height - 0.5)

    def pixels(self, metres: float, z: float) -> float:
        """The horizontal size in pixels of `metres` at depth z."""
        return FOCAL_U * metres / z * self.width

    def stroke(self, metres: float, z: float) -> int:
        """A line width in whole pixels (at least 1) for `metres` at depth z."""
        return max(1, round(self.pixels(metres, z)))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: _Shape, camera: _Camera, fill: int) -> None:
    """Draws one shape into the shape-index map with value `fill`."""
    if shape.kind in ("ellipse", "ring"):
        (x, y, z), (rx, ry, _) = shape.points
        cx, cy = camera.point(x, y, z)
        sx, sy = camera.pixels(rx, z), FOCAL_V * ry / z * camera.height
        box = (cx - sx, cy - sy, cx + sx, cy + sy)
        if shape.kind == "ellipse":
            draw.ellipse(box, fill=fill)
        else:
            draw.ellipse(box, outline=fill, width=camera.stroke(shape.width, z))
        return
    points = [camera.point(*p) for p in shape.points]
    if shape.kind == "poly":
        draw.polygon(points, fill=fill)
    else:
        z = min(p[2] for p in shape.points)
        draw.line(points, fill=fill, width=camera.stroke(shape.width, z), joint="curve")


def _paint_objects(canvas: _Canvas, scene: _Scene) -> None:
    """Draws all objects far-to-near into a shape-index map, then composites it."""
    height, width = canvas.label.shape
    camera = _Camera(scene.u_vp, scene.v_h, height, width)
    index = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(index)
    labels, colors = [0], [(0.0, 0.0, 0.0)]  # entry 0: nothing drawn
    for obj in sorted(scene.objects, key=lambda o: -o.depth):
        for shape in obj.shapes:
            labels.append(shape.label)
            colors.append(shape.color)
            _draw_shape(draw, shape, camera, len(labels) - 1)
    ids = np.asarray(index)
    hit = ids > 0
    drawn = ids[hit]
    canvas.label[hit] = np.take(np.array(labels, np.uint8), drawn)
    canvas.image[hit] = np.take(np.array(colors, np.float32), drawn, axis=0)


def _smooth_noise(rng: np.random.Generator, grid: tuple[int, int], height: int,
                  width: int) -> np.ndarray:
    """Uniform noise on a fixed coarse grid, bilinearly upsampled to the image (in -0.5..0.5)."""
    cells = rng.random(grid, dtype=np.float32) - 0.5
    return np.asarray(Image.fromarray(cells).resize((width, height), Image.BILINEAR))


def _add_texture(canvas: _Canvas, scene: _Scene, rng: np.random.Generator) -> None:
    """Class-dependent grain and blotches, plus clouds in the sky."""
    height, width = canvas.label.shape
    mid = _smooth_noise(rng, (96, 192), height, width)
    coarse = _smooth_noise(rng, (8, 16), height, width)
    fine = rng.random((height, width), dtype=np.float32) - 0.5
    label = canvas.label
    grain = np.take(_FINE_AMP, label) * fine
    grain += np.take(_MID_AMP, label) * mid
    grain += np.take(_COARSE_AMP, label) * coarse
    canvas.image += grain[..., None]
    rows = _horizon_row(canvas, scene)
    threshold = 0.2 - 0.4 * scene.look.cloudiness
    cover = np.clip((coarse[:rows] - threshold) * 4.0, 0, 0.9) * (label[:rows] == SKY)
    sky = canvas.image[:rows]
    sky += cover[..., None] * (np.float32(230.0) - sky)


def _finish(canvas: _Canvas, look: _Look) -> np.ndarray:
    """Applies the colour transform and the light blur; returns the uint8 image."""
    height, width = canvas.label.shape
    pixels = canvas.image.reshape(-1, 3).dot(look.transform) + np.float32(look.offset)
    image = np.clip(pixels, 0, 255).astype(np.uint8).reshape(height, width, 3)
    radius = look.blur * height / 256.0
    return np.asarray(Image.fromarray(image).filter(ImageFilter.BoxBlur(radius)))


def render_scene(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Renders one synthetic street scene.

    Args:
        seed: data set seed (use `split_seed` to derive per-split seeds); >= 0.
        index: scene index within the data set; >= 0.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        (image, label): uint8 RGB [height, width, 3] and uint8 trainIds [height, width].
        The same arguments always give identical arrays; the same (seed, index) at another
        size is the same scene at another resolution.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    layout_seq, noise_seq = np.random.SeedSequence([seed, index]).spawn(2)
    scene = _sample_scene(np.random.default_rng(layout_seq))
    canvas = _new_canvas(height, width)
    _paint_sky(canvas, scene)
    _paint_ground(canvas, scene)
    _paint_end(canvas, scene)
    for side in scene.street.sides:
        _paint_side(canvas, scene, side)
    _paint_objects(canvas, scene)
    _add_texture(canvas, scene, np.random.default_rng(noise_seq))
    return _finish(canvas, scene.look), canvas.label


def split_seed(seed: int, split: str) -> int:
    """The scene seed of one split ("train", "val" or "test") of the data set `seed`.

    Distinct (seed, split) pairs give distinct seeds, so the splits never share scenes.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed * len(SPLITS) + SPLITS.index(split)


# --------------------------------------------------------------------------- writing to disk


def _write_split(out_dir: str | os.PathLike, split: str, count: int, height: int, width: int,
                 seed: int) -> None:
    """Renders one split's scenes and writes their image and label PNGs, replacing the split's
    `synth` city of an earlier run (so sizes and counts never mix)."""
    image_dir = os.path.join(out_dir, "leftImg8bit", split, "synth")
    label_dir = os.path.join(out_dir, "gtFine", split, "synth")
    for directory in (image_dir, label_dir):
        if os.path.islink(directory):
            os.remove(directory)
        elif os.path.isdir(directory):
            shutil.rmtree(directory)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    to_label_ids = trainid_to_labelid_lut()
    step = max(1, count // 10)
    for index in range(count):
        image, train_ids = render_scene(split_seed(seed, split), index, height, width)
        stem = f"synth_{index:06d}_000019"
        outputs = {os.path.join(image_dir, f"{stem}_leftImg8bit.png"): image,
                   os.path.join(label_dir, f"{stem}_gtFine_labelTrainIds.png"): train_ids,
                   os.path.join(label_dir, f"{stem}_gtFine_labelIds.png"): to_label_ids[train_ids]}
        for path, array in outputs.items():
            write_png(path, array, compress_level=1)
        if (index + 1) % step == 0 or index + 1 == count:
            print(f"{split}: {index + 1}/{count} scenes written", flush=True)


def write_cityscapes_layout(out_dir: str | os.PathLike, num_train: int, num_val: int, height: int,
                            width: int, seed: int = 0) -> None:
    """Renders train and val scenes into the official Cityscapes directory layout.

    Writes `leftImg8bit/{split}/synth/synth_{index:06d}_000019_leftImg8bit.png` and the
    matching `gtFine/..._gtFine_labelTrainIds.png` and `..._gtFine_labelIds.png`, replacing
    the `synth` city of an earlier run (other cities are left alone). Scene `index` of a split
    is `render_scene(split_seed(seed, split), index, height, width)`.

    Raises:
        ValueError: `out_dir` exists and is not a directory.

    Args:
        out_dir: root directory of the data set (created if missing).
        num_train: number of training scenes.
        num_val: number of validation scenes.
        height: image height in pixels.
        width: image width in pixels.
        seed: data set seed.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir}: exists and is not a directory")
    for split, count in (("train", num_train), ("val", num_val)):
        _write_split(out_dir, split, count, height, width, seed)


# --------------------------------------------------------------------------- command line


def _valid_size(text: str) -> bool:
    try:
        parse_size(text, "size")
    except ValueError:
        return False
    return True


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a script, so importing stays flag-free)."""
    flags.DEFINE_string("out", None, "Output directory (Cityscapes layout).", required=True)
    flags.DEFINE_integer("train", 500, "Number of training scenes.", lower_bound=0)
    flags.DEFINE_integer("val", 100, "Number of validation scenes.", lower_bound=0)
    flags.DEFINE_string("size", "512x1024", "Image size as HEIGHTxWIDTH.")
    flags.DEFINE_integer("seed", 0, "Data set seed.", lower_bound=0)
    flags.register_validator(
        "size", _valid_size,
        message="--size must be HEIGHTxWIDTH with positive integers, e.g. 512x1024")


def main(argv: Sequence[str]) -> None:
    """Writes the synthetic data set described by the flags."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    args = flags.FLAGS
    height, width = parse_size(args.size, "size")
    try:
        write_cityscapes_layout(args.out, args.train, args.val, height, width, args.seed)
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
