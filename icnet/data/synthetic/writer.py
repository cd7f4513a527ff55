"""Writes rendered scenes to disk in the official Cityscapes directory layout."""

from __future__ import annotations

import os
import shutil

from icnet.data.labels import trainid_to_labelid_lut
from icnet.data.synthetic.rasterizer import render_scene, split_seed
from icnet.image_io import write_png


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
        raise ValueError(f"--output_dir {out_dir}: exists and is not a directory")
    for split, count in (("train", num_train), ("val", num_val)):
        _write_split(out_dir, split, count, height, width, seed)
