"""Rendering: `render_scene` samples scene `(seed, index)` and paints its image and label.

`split_seed` gives the scene seed of each split (SPLITS) of a data set. Painting has three
stages:

1. background planes (sky, ground, facades, walls/fences/hedges), vectorized over
   per-row/per-column coordinate grids with perspective-correct patterns;
2. objects as projected polygons, ellipses and thick lines drawn far-to-near with PIL into
   a shape-index map, so nearer objects occlude farther ones in image and label alike;
3. class-dependent texture noise, clouds, per-image hue/saturation/white-balance/
   contrast/brightness jitter, and a light blur of the image (never of the label).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from icnet.data.synthetic.camera import CAMERA_HEIGHT, FOCAL_U, FOCAL_V, Camera
from icnet.data.synthetic.objects import Shape
from icnet.data.synthetic.palettes import (
    COARSE_AMP, FINE_AMP, GROUND_CURB, GROUND_FACADE, GROUND_GRASS, GROUND_LABELS, GROUND_PAVING,
    GROUND_ROAD, LATTICE, LEAFY, MID_AMP, PANELS, SKY, TERRAIN, WINDOWS)
from icnet.data.synthetic.scene import CURB, Look, Scene, Segments, Side, Street, sample_scene

SPLITS = ("train", "val", "test")


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


def _horizon_row(canvas: _Canvas, scene: Scene) -> int:
    """The first image row below the horizon (the first ground row)."""
    return int(np.searchsorted(canvas.v, scene.v_h + 1e-4, side="right"))


def _paint_sky(canvas: _Canvas, scene: Scene) -> None:
    """A vertical gradient from the zenith colour to the horizon colour above the horizon."""
    rows = _horizon_row(canvas, scene)
    t = (canvas.v[:rows] / scene.v_h)[:, None, None] ** 0.7
    top = np.array(scene.look.sky_top, np.float32)
    horizon = np.array(scene.look.sky_horizon, np.float32)
    canvas.image[:rows] = top + (horizon - top) * t


def _ground_materials(street: Street, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Ground materials (GROUND_*) of pixels from their lateral position x and row depth z."""
    left, right = street.sides

    def outward(side: Side) -> list[float]:
        return [side.road_edge, side.road_edge + CURB, side.road_edge + CURB + side.strip,
                side.sidewalk_outer, side.facade]

    edges = np.array([-e for e in reversed(outward(left))] + outward(right), np.float32)
    bins = np.searchsorted(edges, x)
    table = np.empty((len(z), len(edges) + 1), np.uint8)
    table[:] = (GROUND_FACADE, 0, GROUND_PAVING, GROUND_GRASS, GROUND_CURB, GROUND_ROAD,
                GROUND_CURB, GROUND_GRASS, GROUND_PAVING, 0, GROUND_FACADE)
    for column, side in ((1, left), (len(edges) - 1, right)):
        verge = np.clip(np.searchsorted(side.verge_breaks, z) - 1, 0, len(side.verge_label) - 1)
        grass = side.verge_label[verge] == TERRAIN
        table[:, column] = np.where(grass, GROUND_GRASS, GROUND_PAVING)
    return np.take_along_axis(table, bins, axis=1)


def _road_markings(street: Street, z: np.ndarray, x: np.ndarray) -> np.ndarray:
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


def _paint_ground(canvas: _Canvas, scene: Scene) -> None:
    """Road, curbs, sidewalks and verges below the horizon, with marks, rails and paving joints."""
    street, look = scene.street, scene.look
    r0 = _horizon_row(canvas, scene)
    z = FOCAL_V * CAMERA_HEIGHT / (canvas.v[r0:] - scene.v_h)
    x = (canvas.u - scene.u_vp)[None, :] * (z / FOCAL_U)[:, None]
    material = _ground_materials(street, z, x)
    image = np.take(look.ground, material, axis=0)
    near = int(np.searchsorted(-z, -30.0, side="right"))  # first row nearer than 30 m
    joints = (material[near:] == GROUND_PAVING) & (
        (_frac(z[near:] / 0.9) < 0.06)[:, None] | (_frac(x[near:] / 0.9) < 0.06))
    np.multiply(image[near:], np.float32(0.85), out=image[near:], where=joints[..., None])
    if street.rail_center is not None:
        bed = np.abs(x - street.rail_center)
        np.multiply(image, np.float32(0.85), out=image, where=(bed < 1.1)[..., None])
        image[np.abs(bed - 0.72) < 0.05] = look.rail
    image[_road_markings(street, z, x)] = look.mark
    canvas.label[r0:] = np.take(GROUND_LABELS, material)
    canvas.image[r0:] = image


def _bumps(t: np.ndarray) -> np.ndarray:
    """An irregular ±0.5 m height profile for hedges and park edges."""
    return 0.3 * np.sin(t * 1.7) + 0.2 * np.sin(t * 4.3 + 1.0)


def _plane_patterns(region: np.ndarray, segs: Segments, seg: np.ndarray, t: np.ndarray,
                    y: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Colours of a vertical plane: base colours with windows, wall courses or fence lattice."""
    pattern = segs.pattern[seg]
    grid = segs.grid[seg]
    paint = np.broadcast_to(segs.color[seg], region.shape).copy()
    if (pattern == WINDOWS).any():
        columns = (pattern == WINDOWS) & (_frac(t / grid[:, 0]) < grid[:, 1])
        windows = columns & (_frac(y / grid[:, 2]) < grid[:, 3]) & (y > 3.2) & (y < height - 1.0)
        np.copyto(paint, np.broadcast_to(segs.detail[seg], paint.shape), where=windows[..., None])
    if (pattern == PANELS).any():
        joints = (_frac(y / grid[:, 2]) < grid[:, 3]) | (_frac(t / grid[:, 0]) < grid[:, 1])
        courses = (pattern == PANELS) & joints
        np.multiply(paint, np.float32(0.8), out=paint, where=courses[..., None])
    if (pattern == LATTICE).any():
        cell = grid[:, 0]
        bars = (_frac((t + y) / cell) < grid[:, 1]) | (_frac((t - y) / cell) < grid[:, 1]) \
            | (_frac(t / grid[:, 2]) < grid[:, 3]) | (y > height - 0.08)
        see_through = (pattern == LATTICE) & ~bars
        np.copyto(paint, region * segs.detail[seg], where=see_through[..., None])
    return paint


def _paint_plane(canvas: _Canvas, scene: Scene, cols: np.ndarray, t: np.ndarray,
                 depth: np.ndarray, segs: Segments) -> None:
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
    height = np.where(segs.pattern[seg] == LEAFY, height + _bumps(t) * (height > 0), height)
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


def _paint_end(canvas: _Canvas, scene: Scene) -> None:
    x = (canvas.u - scene.u_vp) * (scene.z_end / FOCAL_U)
    cols = np.arange(len(canvas.u))
    _paint_plane(canvas, scene, cols, x, np.full_like(x, scene.z_end), scene.end)


def _paint_side(canvas: _Canvas, scene: Scene, side: Side) -> None:
    """Facades, then the walls/fences/hedges in front of them, on one side of the street."""
    offset = side.sign * (canvas.u - scene.u_vp)
    for distance, segs in ((side.facade, side.facades), (side.sidewalk_outer + 0.05, side.fronts)):
        cols = np.nonzero(offset > FOCAL_U * distance / segs.breaks[-1])[0]
        if len(cols):
            depth = FOCAL_U * distance / offset[cols]
            _paint_plane(canvas, scene, cols, depth, depth, segs)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, camera: Camera, fill: int) -> None:
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


def _paint_objects(canvas: _Canvas, scene: Scene) -> None:
    """Draws all objects far-to-near into a shape-index map, then composites it."""
    height, width = canvas.label.shape
    camera = Camera(scene.u_vp, scene.v_h, height, width)
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


def _add_texture(canvas: _Canvas, scene: Scene, rng: np.random.Generator) -> None:
    """Class-dependent grain and blotches, plus clouds in the sky."""
    height, width = canvas.label.shape
    mid = _smooth_noise(rng, (96, 192), height, width)
    coarse = _smooth_noise(rng, (8, 16), height, width)
    fine = rng.random((height, width), dtype=np.float32) - 0.5
    label = canvas.label
    grain = np.take(FINE_AMP, label) * fine
    grain += np.take(MID_AMP, label) * mid
    grain += np.take(COARSE_AMP, label) * coarse
    canvas.image += grain[..., None]
    rows = _horizon_row(canvas, scene)
    threshold = 0.2 - 0.4 * scene.look.cloudiness
    cover = np.clip((coarse[:rows] - threshold) * 4.0, 0, 0.9) * (label[:rows] == SKY)
    sky = canvas.image[:rows]
    sky += cover[..., None] * (np.float32(230.0) - sky)


def _finish(canvas: _Canvas, look: Look) -> np.ndarray:
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
    scene = sample_scene(np.random.default_rng(layout_seq))
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
