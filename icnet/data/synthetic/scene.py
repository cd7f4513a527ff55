"""Scene sampling: the street layout (lanes, sides, facades), the look, and the objects.

`sample_scene` draws everything random about one scene, in metres, from a generator; the
rasterizer only projects and paints what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from icnet.data.synthetic.objects import (
    Object, bicycle, bus, car, lamp_post, motorcycle, person, sign_pole, signal_pole, tram, tree,
    truck)
from icnet.data.synthetic.palettes import (
    BUILDING, FACADES, FENCE, FENCES, GLASS, GRASS, LATTICE, LEAFY, LEAVES, PANELS, PAVING,
    PLAIN, SIDEWALK, TERRAIN, VEGETATION, WALL, WALLS, WINDOWS, Color, pick, shade)

# The curb width in metres.
CURB = 0.22


@dataclass(frozen=True)
class Segments:
    """Vertical structures along a horizontal world coordinate t, piecewise constant."""

    breaks: np.ndarray   # (n + 1,) ascending t boundaries
    height: np.ndarray   # (n,) metres; 0 = nothing
    label: np.ndarray    # (n,) trainIds
    color: np.ndarray    # (n, 3)
    pattern: np.ndarray  # (n,) one of PLAIN, WINDOWS, LATTICE, PANELS, LEAFY
    detail: np.ndarray   # (n, 3) glass / see-through tint colour
    grid: np.ndarray     # (n, 4) pattern cell along t, fill fraction, cell height, fill fraction


class _Segment(NamedTuple):
    t0: float
    t1: float
    height: float
    label: int
    color: Color
    pattern: int = PLAIN
    detail: Color = (0.0, 0.0, 0.0)
    grid: tuple[float, float, float, float] = (1.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class Side:
    """One side of the street; distances are |X| from the camera in metres."""

    sign: int
    road_edge: float
    strip: float  # width of the grass strip between curb and sidewalk (0 = none)
    sidewalk_outer: float
    facade: float
    facades: Segments
    fronts: Segments
    verge_breaks: np.ndarray
    verge_label: np.ndarray


@dataclass(frozen=True)
class Street:
    road_left: float
    road_right: float
    lane_centers: tuple[float, ...]
    dashed_marks: tuple[float, ...]
    solid_marks: tuple[float, ...]
    rail_center: float | None
    crosswalk: tuple[float, float] | None
    sides: tuple[Side, Side]


@dataclass(frozen=True)
class Look:
    """Per-image colours of the background and the global colour transform."""

    ground: np.ndarray  # (5, 3) colour per ground material (GROUND_*)
    mark: Color
    rail: Color
    sky_top: Color
    sky_horizon: Color
    cloudiness: float
    transform: np.ndarray  # (3, 3) applied as rgb @ transform
    offset: float
    blur: float  # in units of image height / 256


@dataclass(frozen=True)
class Scene:
    u_vp: float
    v_h: float
    street: Street
    z_end: float
    end: Segments
    objects: list[Object]
    look: Look


# --------------------------------------------------------------------------- layout sampling


def _segments(rows: Sequence[_Segment]) -> Segments:
    """Packs contiguous segments into arrays."""
    return Segments(
        breaks=np.array([rows[0].t0] + [r.t1 for r in rows], np.float32),
        height=np.array([r.height for r in rows], np.float32),
        label=np.array([r.label for r in rows], np.uint8),
        color=np.array([r.color for r in rows], np.float32),
        pattern=np.array([r.pattern for r in rows], np.int8),
        detail=np.array([r.detail for r in rows], np.float32),
        grid=np.array([r.grid for r in rows], np.float32))


def _building(rng: np.random.Generator, t0: float, t1: float, tall: float) -> _Segment:
    color = pick(rng, FACADES, 20)
    glass = shade(pick(rng, (GLASS, (70, 75, 80), (120, 130, 140)), 12), rng.uniform(0.8, 1.3))
    grid = (rng.uniform(2.2, 4.0), rng.uniform(0.35, 0.65),  # window pitch, width fraction
            rng.uniform(2.9, 3.6), rng.uniform(0.4, 0.65))   # floor height, height fraction
    return _Segment(t0, t1, rng.uniform(0.4, 1.0) * tall, BUILDING, color, WINDOWS, glass, grid)


def _park(rng: np.random.Generator, t0: float, t1: float) -> _Segment:
    return _Segment(t0, t1, rng.uniform(4.0, 11.0), VEGETATION, pick(rng, LEAVES), LEAFY)


def _sample_facades(rng: np.random.Generator, t0: float, t1: float, length: tuple[float, float],
                    tall: float) -> Segments:
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
        return _Segment(t0, t1, rng.uniform(0.8, 3.0), WALL, pick(rng, WALLS), PANELS,
                        grid=(rng.uniform(1.5, 3.0), 0.03, rng.uniform(0.3, 0.7), 0.1))
    if kind == 1:
        return _Segment(t0, t1, rng.uniform(1.0, 2.2), FENCE, pick(rng, FENCES), LATTICE,
                        detail=(rng.uniform(0.55, 0.8),) * 3,
                        grid=(rng.uniform(0.2, 0.45), rng.uniform(0.25, 0.45), 2.5, 0.05))
    return _Segment(t0, t1, rng.uniform(0.8, 1.8), VEGETATION, pick(rng, LEAVES), LEAFY)


def _sample_fronts(rng: np.random.Generator) -> Segments:
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


def _sample_side(rng: np.random.Generator, sign: int, road_edge: float, z_end: float) -> Side:
    strip = rng.uniform(0.8, 2.5) if rng.random() < 0.5 else 0.0
    sidewalk_outer = road_edge + CURB + strip + rng.uniform(2.0, 5.0)
    verge = 0.0 if rng.random() < 0.2 else rng.uniform(1.0, 4.0)
    verge_breaks, verge_label = _sample_verge(rng)
    return Side(sign, road_edge, strip, sidewalk_outer, sidewalk_outer + verge,
                _sample_facades(rng, 0.0, z_end, (8.0, 30.0), 30.0), _sample_fronts(rng),
                verge_breaks, verge_label)


def _sample_street(rng: np.random.Generator, z_end: float) -> Street:
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
    return Street(left, right, centers, inner, solid, rail, crosswalk, sides)


def _rotation_about_gray(angle: float) -> np.ndarray:
    """Hue rotation: rotates RGB vectors by `angle` radians about the gray axis."""
    axis = np.ones(3) / math.sqrt(3.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    cos, sin = math.cos(angle), math.sin(angle)
    return np.eye(3) * cos + sin * cross + (1 - cos) * np.outer(axis, axis)


def _sample_look(rng: np.random.Generator) -> Look:
    paving = pick(rng, PAVING)
    asphalt = shade(pick(rng, ((82, 82, 84),), 5), rng.uniform(0.75, 1.25))
    ground = np.array([asphalt, paving, shade(paving, rng.uniform(1.05, 1.25)),
                       pick(rng, GRASS), pick(rng, FACADES)], np.float32)
    overcast = rng.random() < 0.35
    if overcast:
        top = shade(pick(rng, ((150, 155, 165),), 15), rng.uniform(0.9, 1.2))
        horizon = shade(top, 1.15)
    else:
        top = pick(rng, ((70, 120, 200),), 20)
        horizon = pick(rng, ((185, 205, 230),), 15)
    saturation = rng.uniform(0.75, 1.2)
    desaturate = saturation * np.eye(3) + (1 - saturation) * np.full((3, 3), 1 / 3)
    contrast = rng.uniform(0.8, 1.2)
    gains = np.diag(rng.uniform(0.93, 1.07, 3))
    matrix = contrast * gains @ _rotation_about_gray(rng.uniform(-0.15, 0.15)) @ desaturate
    return Look(ground=ground, mark=pick(rng, ((225, 225, 220), (215, 190, 90)), 10),
                rail=pick(rng, ((150, 140, 130),), 15), sky_top=top, sky_horizon=horizon,
                cloudiness=rng.uniform(0.0, 1.0), transform=matrix.T.astype(np.float32),
                offset=128.0 * (1 - contrast) + rng.uniform(-25.0, 25.0),
                blur=rng.uniform(0.3, 0.6))


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


def _two_wheelers(rng: np.random.Generator, lanes: _Lanes) -> list[Object]:
    """A motorcycle and a bicycle (each likely), with riders, in an outer lane near the curb."""
    objects = []
    for builder in (motorcycle, bicycle):
        if rng.random() < 0.85:
            outer = 0 if rng.random() < 0.5 else len(lanes.centers) - 1
            z0 = lanes.place(rng, outer, 2.0, 22.0)
            if z0 is not None:
                toward_curb = -1.0 if outer == 0 else 1.0
                x = lanes.centers[outer] + toward_curb * rng.uniform(0.3, 1.0)
                objects.append(builder(rng, x, z0, rider=True))
    return objects


def _road_users(rng: np.random.Generator, street: Street) -> list[Object]:
    """Two-wheelers, then the tram (on its rails), a truck, a bus and cars in lanes."""
    lanes = _Lanes(street.lane_centers)
    objects = _two_wheelers(rng, lanes)
    n = len(lanes.centers)
    wanted = []  # (builder, lane, length, farthest start depth)
    if street.rail_center is not None:
        wanted.append((tram, lanes.centers.index(street.rail_center), 38.0, 40.0))
    if rng.random() < 0.65:
        wanted.append((truck, int(rng.integers(n)), 10.5, 45.0))
    if rng.random() < 0.65:
        wanted.append((bus, int(rng.integers(n)), 13.5, 45.0))
    wanted += [(car, int(rng.integers(n)), 5.0, 70.0) for _ in range(int(rng.integers(2, 8)))]
    for builder, lane, length, z_max in wanted:
        z0 = lanes.place(rng, lane, length, z_max)
        if z0 is not None:
            objects.append(builder(rng, lanes.centers[lane] + rng.uniform(-0.3, 0.3), z0))
    return objects


def _sidewalk_x(rng: np.random.Generator, side: Side, low: float, high: float) -> float:
    """A lateral position on `side`'s sidewalk, fraction `low`..`high` of its width outwards."""
    inner = side.road_edge + CURB + side.strip
    return side.sign * (inner + rng.uniform(low, high) * (side.sidewalk_outer - inner))


def _curb_pole(rng: np.random.Generator, side: Side, z: float, kind: int) -> Object:
    """A signal pole (kind 0), sign pole (1) or street lamp (2) at the curb of `side`."""
    x = side.sign * (side.road_edge + 0.45)
    if kind == 0:
        return signal_pole(rng, x, z, -side.sign)
    return sign_pole(rng, x, z) if kind == 1 else lamp_post(rng, x, z, -side.sign)


def _street_furniture(rng: np.random.Generator, street: Street) -> list[Object]:
    """Poles with lights and signs, lamps, trees, pedestrians and parked bicycles."""
    sides = street.sides
    first = int(rng.integers(2))
    objects = [_curb_pole(rng, sides[first], rng.uniform(7.0, 25.0), kind=0),
               _curb_pole(rng, sides[1 - first], rng.uniform(6.0, 25.0), kind=1)]
    for side in sides:
        for _ in range(int(rng.integers(0, 3))):
            objects.append(_curb_pole(rng, side, rng.uniform(6.0, 35.0), int(rng.integers(3))))
        for _ in range(int(rng.integers(0, 4))):
            objects.append(tree(rng, _sidewalk_x(rng, side, 0.5, 0.85), rng.uniform(7.0, 70.0)))
        for _ in range(int(rng.integers(1, 4))):
            objects.append(person(rng, _sidewalk_x(rng, side, 0.15, 0.9), rng.uniform(5.0, 40.0)))
        if rng.random() < 0.3:
            x = _sidewalk_x(rng, side, 0.4, 0.8)
            objects.append(bicycle(rng, x, rng.uniform(6.0, 20.0), rider=False))
    if street.crosswalk is not None and rng.random() < 0.7:
        z = rng.uniform(*street.crosswalk)
        x = rng.uniform(street.road_left + 0.5, street.road_right - 0.5)
        objects.append(person(rng, x, z))
    return objects


def _sample_end(rng: np.random.Generator) -> Segments:
    """Buildings across the far end of the street (t = X at depth z_end)."""
    return _sample_facades(rng, -45.0, 45.0, (10.0, 30.0), 40.0)


def sample_scene(rng: np.random.Generator) -> Scene:
    """A whole scene: camera tilt and pan, street, far end, objects and look, from `rng`."""
    u_vp, v_h = rng.uniform(0.4, 0.6), rng.uniform(0.36, 0.47)
    z_end = rng.uniform(120.0, 300.0)
    street = _sample_street(rng, z_end)
    end = _sample_end(rng)
    objects = _road_users(rng, street) + _street_furniture(rng, street)
    return Scene(u_vp, v_h, street, z_end, end, objects, _sample_look(rng))
