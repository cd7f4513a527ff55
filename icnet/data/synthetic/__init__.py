"""Procedurally rendered Cityscapes-like street scenes: the kit's embedded default dataset.

A pinhole camera 1.5 m above a flat ground looks down a straight street. The layout is
sampled in metres from a generator seeded by ``(seed, index)``: lanes with lane marks,
crosswalks and optional tram rails, curbs, grass strips, sidewalks and verges, building and park
facades along both sides with window grids, walls, see-through fences and hedges in front
of them, an end-of-street facade, and objects (cars, trucks, buses, trams, motorcycles and
bicycles with riders, pedestrians, poles with traffic lights and signs, street lamps, trees).
Points are projected to normalized image coordinates, so one ``(seed, index)`` is the same
scene at every resolution. `rasterizer` paints it in three stages: background planes, objects
far-to-near (so nearer ones occlude farther ones in image and label alike), then texture,
colour jitter and a light blur of the image.

Labels are Cityscapes trainIds 0..18 (see ``icnet.data.labels``); no pixel is ignore (255).
Scene i of a split is ``render_scene(split_seed(seed, split), i, height, width)``, both for
the in-memory source and for the files ``write_cityscapes_layout`` writes.

Modules:

- ``palettes``: class ids, colours, ground materials, plane patterns, texture amplitudes;
- ``camera``: the camera's focal lengths and height, and projection to pixels;
- ``objects``: object geometry (vehicles, riders, pedestrians, poles, lights, signs, trees);
- ``scene``: scene sampling (street, sides, facades, look, object placement);
- ``rasterizer``: ``render_scene`` (the three stages above) and ``split_seed``;
- ``writer``: ``write_cityscapes_layout``;
- ``__main__``: the command line.

Write a data set in the official Cityscapes directory layout:

    python -m icnet.data.synthetic --output_dir data/synthetic --train 500 --val 100 \\
        --size 512x1024 --seed 0
"""

from icnet.data.synthetic.rasterizer import SPLITS, render_scene, split_seed
from icnet.data.synthetic.writer import write_cityscapes_layout

__all__ = ["SPLITS", "render_scene", "split_seed", "write_cityscapes_layout"]
