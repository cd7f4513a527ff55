"""Cityscapes in its official layout (leftImg8bit/ and gtFine/)."""

from __future__ import annotations

import os
from pathlib import Path

from icnet.data.labels import labelid_to_trainid_lut
from icnet.data.listfile import Example, Listing, identity_lut, require_dir

SPLITS = ("train", "val")
IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


def list_examples(data_dir: str | os.PathLike, split: str) -> Listing:
    """Lists the images of a split with their fine labels.

    Labels come from `*_gtFine_labelTrainIds.png` when every image has one; otherwise every
    image must have a `*_gtFine_labelIds.png`, and those are mapped to trainIds.

    Args:
        data_dir: the directory holding `leftImg8bit/` and `gtFine/`.
        split: one of SPLITS.

    Returns:
        The Listing, sorted by image path; names are image file names without `_leftImg8bit.png`.

    Raises:
        FileNotFoundError: if data_dir does not exist.
        ValueError: for an unknown split, no images, or an image without a label file.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Cityscapes split {split!r}; choose one of {', '.join(SPLITS)}")
    root = require_dir(data_dir, "Cityscapes data_dir")
    image_dir = root / "leftImg8bit" / split
    pattern = f"<city>/*{IMAGE_SUFFIX}"
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise ValueError(f"no Cityscapes images in {image_dir} (looked for {pattern})")
    train_ids = [_label_path(root, split, image, TRAIN_IDS_SUFFIX) for image in images]
    label_ids = [_label_path(root, split, image, LABEL_IDS_SUFFIX) for image in images]
    for image, train_id, label_id in zip(images, train_ids, label_ids):
        if not train_id.is_file() and not label_id.is_file():
            raise ValueError(f"missing label file {train_id} (or {label_id}) for image {image}")
    if all(path.is_file() for path in train_ids):
        labels, lut = train_ids, identity_lut()
    else:
        _require_all(label_ids)
        labels, lut = label_ids, labelid_to_trainid_lut()
    examples = [Example(str(image), str(label), image.name[:-len(IMAGE_SUFFIX)])
                for image, label in zip(images, labels)]
    return Listing(examples, lut)


def _label_path(root: Path, split: str, image: Path, suffix: str) -> Path:
    stem = image.name[:-len(IMAGE_SUFFIX)]
    return root / "gtFine" / split / image.parent.name / f"{stem}{suffix}"


def _require_all(label_ids: list[Path]) -> None:
    for path in label_ids:
        if not path.is_file():
            raise ValueError(f"missing label file {path}: some images of the split have only "
                             "labelIds files, so every image needs one")
