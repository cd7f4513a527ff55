"""Object geometry: road users, pedestrians, poles, lights, signs and trees as world shapes.

Each public builder (`car`, `truck`, `bus`, `tram`, `motorcycle`, `bicycle`, `person`,
`signal_pole`, `sign_pole`, `lamp_post`, `tree`) returns an `Object`: its depth (for
far-to-near drawing) and its `Shape` primitives in world coordinates (metres), each with a
trainId and a colour (a rider's shapes are RIDER, their vehicle's are MOTORCYCLE or BICYCLE).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from icnet.data.synthetic.camera import CAMERA_HEIGHT
from icnet.data.synthetic.palettes import (
    BICYCLE, BUS, BUS_COLORS, CAR, CAR_COLORS, CARGO_COLORS, CLOTHES, DARK, GLASS, HAIR, HEADLAMP,
    LEAVES, LIGHT, METAL, MOTORCYCLE, PERSON, POLE, POLES, RED_LAMP, RIDER, SIGN, SKIN, TRAIN,
    TRAM_COLORS, TRUCK, VEGETATION, WHITE, Color, pick, shade)

Point = tuple[float, float, float]


class Shape(NamedTuple):
    """One drawable primitive in world coordinates (metres).

    kind: "poly" (points are the corners), "ellipse" / "ring" (points are the centre and
    (rx, ry, 0) radii in a plane facing the camera), or "line" (a thick polyline).
    """

    kind: str
    points: tuple[Point, ...]
    label: int
    color: Color
    width: float = 0.0


class Object(NamedTuple):
    depth: float
    shapes: list[Shape]


def _front(x0: float, x1: float, y0: float, y1: float, z: float, label: int,
           color: Color) -> Shape:
    """A rectangle in the plane of constant Z (facing the camera)."""
    return Shape("poly", ((x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)), label, color)


def _flank(x: float, y0: float, y1: float, z0: float, z1: float, label: int,
           color: Color) -> Shape:
    """A rectangle in the plane of constant X (a side face), from depth z0 to z1."""
    return Shape("poly", ((x, y0, z0), (x, y1, z0), (x, y1, z1), (x, y0, z1)), label, color)


def _disc(x: float, y: float, z: float, rx: float, ry: float, label: int, color: Color) -> Shape:
    """An ellipse in the plane of constant Z."""
    return Shape("ellipse", ((x, y, z), (rx, ry, 0.0)), label, color)


def _profile(points: Sequence[tuple[float, float]], x: float, z: float, d: float, label: int,
             color: Color) -> Shape:
    """A polygon of a side-view figure from (forward offset, height) points; d = +-1 facing."""
    return Shape("poly", tuple((x + d * a, b, z) for a, b in points), label, color)


def _limb(a: tuple[float, float], b: tuple[float, float], x: float, z: float, d: float,
          width: float, label: int, color: Color) -> Shape:
    """A thick line between two (forward offset, height) points of a side-view figure."""
    return Shape("line", ((x + d * a[0], a[1], z), (x + d * b[0], b[1], z)), label, color, width)


def _visible_side(x0: float, x1: float) -> float | None:
    """X of the side face of an X-extent that the camera (at X = 0) sees, if any."""
    if x1 < 0:
        return x1
    return x0 if x0 > 0 else None


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, label: int,
         color: Color) -> list[Shape]:
    """The visible faces of an axis-aligned box, far faces first."""
    shapes = []
    side = _visible_side(x0, x1)
    if side is not None:
        shapes.append(_flank(side, y0, y1, z0, z1, label, shade(color, 0.8)))
    if y1 < CAMERA_HEIGHT:
        top = ((x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1))
        shapes.append(Shape("poly", top, label, shade(color, 1.1)))
    shapes.append(_front(x0, x1, y0, y1, z0, label, color))
    return shapes


def _side_wheel(x: float, radius: float, z: float, label: int) -> list[Shape]:
    """A wheel on a side face: a projected circle in the plane of constant X, with a hub."""
    def circle(r: float) -> tuple[Point, ...]:
        return tuple((x, radius + r * math.sin(a), z + r * math.cos(a))
                     for a in np.linspace(0, 2 * math.pi, 12, endpoint=False))
    return [Shape("poly", circle(radius), label, DARK),
            Shape("poly", circle(radius * 0.45), label, METAL)]


def _rear_stubs(x0: float, x1: float, z: float, height: float, label: int) -> list[Shape]:
    """The two wheels seen below the near face of a vehicle."""
    return [_front(x0 + 0.08, x0 + 0.38, 0.0, height, z, label, DARK),
            _front(x1 - 0.38, x1 - 0.08, 0.0, height, z, label, DARK)]


def _tail_lights(x0: float, x1: float, y: float, z: float, label: int) -> list[Shape]:
    return [_front(x0 + 0.05, x0 + 0.3, y, y + 0.18, z, label, RED_LAMP),
            _front(x1 - 0.3, x1 - 0.05, y, y + 0.18, z, label, RED_LAMP)]


def _window_row(side: float, y0: float, y1: float, z0: float, z1: float, pitch: float,
                label: int, body: Color) -> list[Shape]:
    """A glass band on a side face split into windows by pillars."""
    shapes = [_flank(side, y0, y1, z0, z1, label, GLASS)]
    for z in np.arange(z0 + pitch, z1 - 0.3, pitch):
        shapes.append(_flank(side, y0, y1, z, z + 0.18, label, shade(body, 0.8)))
    return shapes


def car(rng: np.random.Generator, x: float, z0: float) -> Object:
    """A car seen from behind: body, glass cabin, wheels, tail lights and number plate."""
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95)
    height = rng.uniform(1.4, 1.75)
    color = pick(rng, CAR_COLORS, 12)
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
        cabin[0] = cabin[0]._replace(color=GLASS)
    shapes += cabin
    shapes.append(_front(x0 + 0.22, x1 - 0.22, belt + 0.06, height - 0.07, cabin_z, CAR, GLASS))
    shapes += _tail_lights(x0, x1, belt - 0.25, z0, CAR)
    shapes.append(_front(x - 0.26, x + 0.26, 0.42, 0.54, z0, CAR, WHITE))
    return Object(z0, shapes)


def truck(rng: np.random.Generator, x: float, z0: float) -> Object:
    """A box truck seen from behind: a tall cargo box in front of the cab."""
    cargo_len, cab_len = rng.uniform(5.0, 8.0), 2.3
    height = rng.uniform(3.2, 3.9)
    x0, x1 = x - 1.22, x + 1.22
    cargo, cab = pick(rng, CARGO_COLORS), pick(rng, CAR_COLORS)
    z_cab = z0 + cargo_len
    shapes = _box(x0 + 0.05, x1 - 0.05, 0.5, 2.9, z_cab, z_cab + cab_len, TRUCK, cab)
    side = _visible_side(x0, x1)
    if side is not None:
        shapes.append(_flank(side, 1.7, 2.6, z_cab + 0.9, z_cab + 2.0, TRUCK, GLASS))
    shapes += _rear_stubs(x0, x1, z0 + 1.0, 0.6, TRUCK)
    shapes += _box(x0, x1, 0.9, height, z0, z_cab, TRUCK, cargo)
    if side is not None:
        for z in (z0 + 1.0, z0 + 2.2, z_cab + 1.3):
            shapes += _side_wheel(side, 0.5, z, TRUCK)
    shapes.append(_front(x - 0.04, x + 0.04, 1.0, height - 0.1, z0, TRUCK, DARK))
    shapes.append(_front(x0, x1, 0.55, 0.9, z0, TRUCK, DARK))
    shapes += _tail_lights(x0, x1, 0.6, z0, TRUCK)
    return Object(z0, shapes)


def bus(rng: np.random.Generator, x: float, z0: float) -> Object:
    """A city bus seen from behind, with a row of side windows."""
    length, height = rng.uniform(11.0, 13.5), rng.uniform(2.9, 3.2)
    color = pick(rng, BUS_COLORS)
    x0, x1, z1 = x - 1.27, x + 1.27, z0 + length
    shapes = _rear_stubs(x0, x1, z0 + 0.6, 0.5, BUS)
    shapes += _box(x0, x1, 0.3, height, z0, z1, BUS, color)
    side = _visible_side(x0, x1)
    if side is not None:
        shapes += _window_row(side, 1.2, 2.6, z0 + 0.5, z1 - 1.0, 1.5, BUS, color)
        shapes += _side_wheel(side, 0.5, z0 + 2.6, BUS) + _side_wheel(side, 0.5, z1 - 2.7, BUS)
    shapes.append(_front(x0 + 0.2, x1 - 0.2, 1.8, height - 0.25, z0, BUS, GLASS))
    shapes.append(_front(x0, x1, 0.3, 0.6, z0, BUS, DARK))
    shapes += _tail_lights(x0, x1, 0.8, z0, BUS)
    return Object(z0, shapes)


def tram(rng: np.random.Generator, x: float, z0: float) -> Object:
    """A long tram on rails: skirt, stripe, window row, big windscreen and a pantograph."""
    length, height = rng.uniform(25.0, 38.0), rng.uniform(3.3, 3.6)
    color, stripe = pick(rng, TRAM_COLORS), pick(rng, TRAM_COLORS, 30)
    x0, x1, z1 = x - 1.3, x + 1.3, z0 + length
    pantograph = ((x, height, z0 + 6.0), (x, height + 0.9, z0 + 7.0), (x, height + 0.9, z0 + 5.0))
    shapes = [Shape("line", pantograph, TRAIN, DARK, 0.12)]
    shapes += _box(x0, x1, 0.35, height, z0, z1, TRAIN, color)
    side = _visible_side(x0, x1)
    if side is not None:
        shapes.append(_flank(side, 0.35, 0.65, z0, z1, TRAIN, DARK))
        shapes.append(_flank(side, 0.75, 1.0, z0, z1, TRAIN, stripe))
        shapes += _window_row(side, 1.15, 2.7, z0 + 1.5, z1 - 0.5, 2.0, TRAIN, color)
    shapes.append(_front(x0 + 0.15, x1 - 0.15, 1.3, 2.85, z0, TRAIN, GLASS))
    shapes.append(_front(x0 + 0.5, x1 - 0.5, 2.95, 3.2, z0, TRAIN, (230.0, 150.0, 30.0)))
    shapes.append(_front(x0, x1, 0.75, 1.0, z0, TRAIN, stripe))
    for lamp in (x0 + 0.35, x1 - 0.35):
        shapes.append(_disc(lamp, 1.15, z0, 0.12, 0.1, TRAIN, HEADLAMP))
    return Object(z0, shapes)


def _seated_rider(rng: np.random.Generator, x: float, z: float, d: float,
                  hip: tuple[float, float], foot: tuple[float, float],
                  hands: tuple[float, float], helmet: bool) -> list[Shape]:
    """A side-view rider: legs to the pedals/pegs, torso leaning to the handlebar, head."""
    jacket, trousers = pick(rng, CLOTHES), pick(rng, CLOTHES)
    knee = (foot[0] + 0.15, (hip[1] + foot[1]) / 2 + 0.12)
    shoulder = (hip[0] + 0.2, hip[1] + 0.58)
    head = (shoulder[0] + 0.06, shoulder[1] + 0.2)
    head_color = pick(rng, CAR_COLORS) if helmet else pick(rng, SKIN, 8)
    head_width = 0.13 if helmet else 0.11
    return [_limb(hip, knee, x, z, d, 0.17, RIDER, trousers),
            _limb(knee, foot, x, z, d, 0.13, RIDER, trousers),
            _limb(hip, shoulder, x, z, d, 0.36, RIDER, jacket),
            _limb(shoulder, hands, x, z, d, 0.11, RIDER, jacket),
            _disc(x + d * head[0], head[1], z, head_width, 0.14, RIDER, head_color)]


def motorcycle(rng: np.random.Generator, x: float, z: float, rider: bool) -> Object:
    """A side-view motorcycle (solid wheels, engine, fairing), optionally with a rider."""
    d = float(rng.choice((-1.0, 1.0)))
    color = pick(rng, CAR_COLORS, 20)
    shapes = []
    for wheel in (x - 0.72, x + 0.72):
        shapes.append(_disc(wheel, 0.32, z, 0.32, 0.32, MOTORCYCLE, DARK))
        shapes.append(_disc(wheel, 0.32, z, 0.12, 0.12, MOTORCYCLE, METAL))
    engine = ((-0.2, 0.3), (0.3, 0.3), (0.35, 0.6), (-0.25, 0.62))
    body = ((-0.8, 0.72), (-0.35, 0.56), (0.35, 0.52), (0.62, 0.8), (0.45, 1.0), (0.05, 0.98),
            (-0.35, 0.88), (-0.82, 0.88))
    shapes.append(_profile(engine, x, z, d, MOTORCYCLE, (60.0, 60.0, 62.0)))
    shapes.append(_limb((0.72, 0.32), (0.5, 1.08), x, z, d, 0.08, MOTORCYCLE, METAL))
    shapes.append(_profile(body, x, z, d, MOTORCYCLE, color))
    shapes.append(_disc(x + d * 0.6, 0.88, z, 0.08, 0.08, MOTORCYCLE, HEADLAMP))
    if rider:
        shapes += _seated_rider(rng, x, z, d, hip=(-0.3, 1.0), foot=(0.0, 0.42),
                                hands=(0.48, 1.08), helmet=True)
    return Object(z, shapes)


def bicycle(rng: np.random.Generator, x: float, z: float, rider: bool) -> Object:
    """A side-view bicycle (ring wheels, diamond frame), optionally with a rider."""
    d = float(rng.choice((-1.0, 1.0)))
    frame = pick(rng, CAR_COLORS, 25)
    rear, front, crank = (-0.52, 0.34), (0.52, 0.34), (0.0, 0.32)
    seat, head = (-0.16, 0.86), (0.38, 0.9)
    shapes = [Shape("ring", ((x + d * hub[0], hub[1], z), (0.34, 0.34, 0.0)), BICYCLE, DARK, 0.1)
              for hub in (rear, front)]
    tubes = ((rear, crank), (crank, seat), (rear, seat), (seat, head), (head, crank), (head, front))
    shapes += [_limb(a, b, x, z, d, 0.075, BICYCLE, frame) for a, b in tubes]
    shapes.append(_limb(head, (0.3, 1.04), x, z, d, 0.07, BICYCLE, DARK))
    shapes.append(_limb((-0.26, 0.9), (-0.04, 0.9), x, z, d, 0.08, BICYCLE, DARK))
    if rider:
        shapes += _seated_rider(rng, x, z, d, hip=(-0.16, 0.95), foot=(0.08, 0.22),
                                hands=(0.3, 1.04), helmet=False)
    return Object(z, shapes)


def person(rng: np.random.Generator, x: float, z: float) -> Object:
    """A pedestrian facing the camera (or away), possibly mid-stride."""
    height = rng.uniform(1.55, 1.95)
    hip, shoulder = 0.52 * height, 0.81 * height
    stride = rng.uniform(0.0, 0.14)
    shirt, trousers = pick(rng, CLOTHES), pick(rng, CLOTHES)
    skin = pick(rng, SKIN, 8)
    shapes = []
    for s in (-1.0, 1.0):
        leg = ((x + s * 0.02, hip, z), (x + s * 0.17, hip, z), (x + s * (0.13 + stride), 0.0, z),
               (x + s * (0.03 + stride), 0.0, z))
        shapes.append(Shape("poly", leg, PERSON, trousers))
        arm = ((x + s * 0.2, shoulder - 0.05, z), (x + s * (0.27 + stride / 2), hip - 0.02, z))
        shapes.append(Shape("line", arm, PERSON, shirt, 0.1))
    torso = ((x - 0.22, shoulder, z), (x + 0.22, shoulder, z), (x + 0.18, hip - 0.06, z),
             (x - 0.18, hip - 0.06, z))
    shapes.append(Shape("poly", torso, PERSON, shirt))
    shapes.append(_disc(x, 0.91 * height, z, 0.095, 0.12, PERSON, skin))
    shapes.append(_disc(x, 0.95 * height, z, 0.1, 0.07, PERSON, pick(rng, HAIR, 10)))
    return Object(z, shapes)


def _pole(x: float, z: float, height: float, width: float, color: Color) -> Shape:
    return _front(x - width / 2, x + width / 2, 0.0, height, z, POLE, color)


def _traffic_light(rng: np.random.Generator, x: float, y_top: float, z: float) -> list[Shape]:
    """A dark housing with three lamps, one of them lit (unless seen from behind)."""
    housing = pick(rng, ((35, 35, 38), (60, 60, 40)), 8)
    shapes = [_front(x - 0.22, x + 0.22, y_top - 1.0, y_top, z, LIGHT, housing)]
    if rng.random() < 0.25:
        return shapes
    lit = int(rng.integers(3))
    for k, color in enumerate(((255.0, 50.0, 40.0), (255.0, 200.0, 30.0), (60.0, 255.0, 130.0))):
        shapes.append(_disc(x, y_top - 0.18 - 0.32 * k, z, 0.12, 0.12, LIGHT,
                            color if k == lit else shade(color, 0.3)))
    return shapes


def _sign_plate(rng: np.random.Generator, x: float, y: float, z: float) -> list[Shape]:
    """A traffic sign face: round, triangular, rectangular or diamond, with a border."""
    kind = int(rng.integers(4))
    r = rng.uniform(0.32, 0.45)
    red, blue, yellow = (200.0, 30.0, 35.0), (30.0, 80.0, 170.0), (240.0, 200.0, 30.0)
    if kind == 0:
        return [_disc(x, y, z, r, r, SIGN, red),
                _disc(x, y, z, 0.72 * r, 0.72 * r, SIGN, WHITE if rng.random() < 0.5 else blue)]
    if kind == 1:
        outer = ((x - r, y - 0.8 * r, z), (x + r, y - 0.8 * r, z), (x, y + r, z))
        inner = ((x - 0.6 * r, y - 0.55 * r, z), (x + 0.6 * r, y - 0.55 * r, z),
                 (x, y + 0.5 * r, z))
        return [Shape("poly", outer, SIGN, red), Shape("poly", inner, SIGN, WHITE)]
    if kind == 2:
        return [_front(x - r, x + r, y - 0.7 * r, y + 0.7 * r, z, SIGN, blue),
                _front(x - 0.3 * r, x + 0.3 * r, y - 0.4 * r, y + 0.4 * r, z, SIGN, WHITE)]
    diamond = ((x - r, y, z), (x, y - r, z), (x + r, y, z), (x, y + r, z))
    small = tuple((x + 0.6 * (px - x), y + 0.6 * (py - y), z) for px, py, _ in diamond)
    return [Shape("poly", diamond, SIGN, WHITE), Shape("poly", small, SIGN, yellow)]


def signal_pole(rng: np.random.Generator, x: float, z: float, toward_road: float) -> Object:
    """A pole carrying a traffic light, optionally with a mast arm and a second light."""
    color = pick(rng, POLES, 10)
    height = rng.uniform(3.6, 5.5)
    shapes = [_pole(x, z, height, 0.3, color)]
    if rng.random() < 0.5:
        reach = x + toward_road * rng.uniform(2.5, 5.0)
        arm = ((x, height - 0.1, z), (reach, height - 0.1, z))
        shapes.append(Shape("line", arm, POLE, color, 0.2))
        shapes += _traffic_light(rng, reach, height - 0.15, z)
    shapes += _traffic_light(rng, x, rng.uniform(2.8, height), z - 0.2)
    if rng.random() < 0.4:
        shapes += _sign_plate(rng, x, 2.2, z - 0.2)
    return Object(z - 0.2, shapes)


def sign_pole(rng: np.random.Generator, x: float, z: float) -> Object:
    """A short pole with one or two traffic signs."""
    height = rng.uniform(2.6, 3.4)
    shapes = [_pole(x, z, height, 0.25, pick(rng, POLES, 10))]
    shapes += _sign_plate(rng, x, height - 0.35, z - 0.1)
    if rng.random() < 0.4:
        shapes += _sign_plate(rng, x, height - 1.2, z - 0.1)
    return Object(z - 0.1, shapes)


def lamp_post(rng: np.random.Generator, x: float, z: float, toward_road: float) -> Object:
    """A tall street lamp with an arm reaching over the road (all pole)."""
    color = pick(rng, POLES, 10)
    height = rng.uniform(6.5, 9.0)
    reach = x + toward_road * rng.uniform(1.2, 2.5)
    lamp_end = reach + toward_road * 0.7
    arm = ((x, height - 0.3, z), (reach, height, z))
    return Object(z, [_pole(x, z, height, 0.3, color),
                      Shape("line", arm, POLE, color, 0.15),
                      _front(min(reach, lamp_end), max(reach, lamp_end), height - 0.2,
                             height + 0.05, z, POLE, shade(color, 0.7))])


def tree(rng: np.random.Generator, x: float, z: float) -> Object:
    """A trunk and a canopy of overlapping leafy blobs (all vegetation, as in Cityscapes)."""
    trunk_h, radius = rng.uniform(2.0, 3.5), rng.uniform(1.3, 2.8)
    trunk_w = rng.uniform(0.3, 0.45)
    bark = pick(rng, ((90, 70, 50), (70, 65, 55)), 10)
    shapes = [_front(x - trunk_w / 2, x + trunk_w / 2, 0.0, trunk_h + radius, z, VEGETATION, bark)]
    for _ in range(int(rng.integers(4, 8))):
        cx = x + rng.uniform(-0.6, 0.6) * radius
        cy = trunk_h + radius * rng.uniform(0.5, 1.3)
        size = radius * rng.uniform(0.5, 0.85)
        shapes.append(_disc(cx, cy, z, size, size * rng.uniform(0.8, 1.1), VEGETATION,
                            pick(rng, LEAVES)))
    return Object(z, shapes)
