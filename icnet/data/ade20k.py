"""ADE20K SceneParsing (ADEChallengeData2016): 150 classes, annotation 0 ignored."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from icnet.data.labels import ADE20K_CLASS_NAMES, IGNORE_LABEL
from icnet.data.listfile import Example, Listing, require_dir, require_files

NUM_CLASSES = len(ADE20K_CLASS_NAMES)
SPLITS = {"train": "training", "val": "validation"}
ROOT_NAME = "ADEChallengeData2016"
EVAL_SIZE = (480, 480)  # the reference evaluates ADE20K on inputs resized to this (H, W)


def label_lut() -> np.ndarray:
    """A uint8[256] table from annotation values to class ids: 0 -> 255 (ignore), v -> v - 1."""
    lut = np.arange(-1, 255, dtype=np.int32)
    lut[0] = IGNORE_LABEL
    return lut.astype(np.uint8)


def dataset_root(data_dir: str | os.PathLike) -> Path:
    """The ADEChallengeData2016 folder: data_dir itself or its child of that name.

    Raises:
        FileNotFoundError: if data_dir does not exist.
    """
    root = require_dir(data_dir, "ADE20K data_dir")
    return root / ROOT_NAME if (root / ROOT_NAME).is_dir() else root


def list_examples(data_dir: str | os.PathLike, split: str) -> Listing:
    """Lists the images of a split with their annotations.

    Args:
        data_dir: ADEChallengeData2016 or the folder that holds it.
        split: "train" or "val" (or their folder names "training", "validation").

    Returns:
        The Listing, sorted by image path; names are image file names without extension.

    Raises:
        FileNotFoundError: if data_dir does not exist.
        ValueError: for an unknown split, no images, or an image without its annotation.
    """
    folder = SPLITS.get(split, split)
    if folder not in SPLITS.values():
        raise ValueError(f"unknown ADE20K split {split!r}; choose one of {', '.join(SPLITS)}")
    root = dataset_root(data_dir)
    image_dir = root / "images" / folder
    images = sorted(image_dir.glob("*.jpg"))
    if not images:
        raise ValueError(f"no ADE20K images in {image_dir} (looked for *.jpg)")
    examples = []
    for image in images:
        label = root / "annotations" / folder / f"{image.stem}.png"
        require_files(image, label, f" for image {image}")
        examples.append(Example(str(image), str(label), image.stem))
    return Listing(examples, label_lut())
