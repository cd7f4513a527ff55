"""Dataset sources for training and evaluation; `make_source` picks one by name.

Example:
    source = make_source("cityscapes", "train", data_dir="/data/cityscapes")
    warn_if_crop_pads(source, (720, 720))
    batches = train_dataset(source, (720, 720), batch_size=8, random_scale=True,
                            random_mirror=True, seed=0)
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from icnet.data import ade20k, cityscapes, synthetic
from icnet.data.labels import (ADE20K_CLASS_NAMES, CITYSCAPES_CLASS_NAMES, CITYSCAPES_NUM_CLASSES,
                               labelid_to_trainid_lut)
from icnet.data.listfile import Example, Listing, identity_lut, read_list_file
from icnet.data.pipeline import (Source, eval_dataset, image_size, load_files, train_dataset,
                                 warn_if_crop_pads)

__all__ = ["Example", "FileSource", "Source", "SyntheticSource", "class_names_for",
           "eval_dataset", "make_source",
           "train_dataset", "warn_if_crop_pads"]

SOURCES = ("synthetic", "cityscapes", "ade20k", "list")
SPLITS = ("train", "val")
LIST_LABEL_MAPS = {
    "trainids": identity_lut,
    "cityscapes_labelids": labelid_to_trainid_lut,
    "ade20k": ade20k.label_lut,
}
SYNTHETIC_TRAIN_COUNT = 2**31 - 1  # effectively endless
SYNTHETIC_VAL_COUNT = 100


class FileSource(Source):
    """A split stored as image and label files.

    Attributes:
        examples: the examples, in the list file's order (directory layouts: sorted by path).
        label_lut: uint8[256] table from stored label values to trainIds.
    """

    def __init__(self, name: str, split: str, listing: Listing, num_classes: int,
                 class_names: tuple[str, ...]):
        self.name, self.split = name, split
        self.num_classes, self.class_names = num_classes, class_names
        self.examples: list[Example] = listing.examples
        self.label_lut: np.ndarray = listing.label_lut
        self._image_paths = tf.constant([example.image_path for example in self.examples])
        self._label_paths = tf.constant([example.label_path for example in self.examples])
        self._names = tf.constant([example.name for example in self.examples])

    def __len__(self) -> int:
        return len(self.examples)

    def image_size(self) -> tuple[int, int]:
        return image_size(self.examples[0].image_path)

    def load(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, label = load_files(tf.gather(self._image_paths, index),
                                  tf.gather(self._label_paths, index), self.label_lut,
                                  self.num_classes)
        return image, label, tf.gather(self._names, index)


class SyntheticSource(Source):
    """Scenes rendered on the fly by `icnet.data.synthetic.render_scene`, Cityscapes trainIds.

    Element i of a split is `render_scene(split_seed(seed, split), i, height, width)` and is
    named `<split>_<i>` (i zero-padded to 6 digits).
    """

    name = "synthetic"

    def __init__(self, split: str, size: tuple[int, int], count: int, seed: int):
        self.split, self.size, self.count = split, tuple(size), count
        self.num_classes, self.class_names = CITYSCAPES_NUM_CLASSES, CITYSCAPES_CLASS_NAMES
        self._render_seed = synthetic.split_seed(seed, split)
        self._render_scene = synthetic.render_scene

    def __len__(self) -> int:
        return self.count

    def image_size(self) -> tuple[int, int]:
        return self.size

    def load(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        height, width = self.size

        def render(scene: np.int64) -> tuple[np.ndarray, np.ndarray]:
            return self._render_scene(self._render_seed, int(scene), height, width)

        image, label = tf.numpy_function(render, [index], [tf.uint8, tf.uint8],
                                         name="render_scene")
        image.set_shape([height, width, 3])
        label.set_shape([height, width])
        name = tf.strings.join([self.split, tf.strings.as_string(index, width=6, fill="0")], "_")
        return image, label, name


def make_source(name: str, split: str, data_dir: str | os.PathLike | None = None,
                list_file: str | os.PathLike | None = None, num_classes: int | None = None,
                synthetic_size: tuple[int, int] = (256, 512), synthetic_count: int | None = None,
                seed: int = 0, label_map: str = "trainids") -> Source:
    """The source of one dataset split.

    Args:
        name: one of SOURCES.
        split: one of SPLITS.
        data_dir: dataset directory (cityscapes, ade20k); for list, the directory the list's
            paths are relative to (default: the list file's directory).
        list_file: the list file (list only).
        num_classes: required for list; for the others it must match the dataset if given.
        synthetic_size: (height, width) of synthetic images.
        synthetic_count: number of synthetic images; default SYNTHETIC_TRAIN_COUNT for train
            (effectively endless) and SYNTHETIC_VAL_COUNT for val.
        seed: seed of the synthetic scenes.
        label_map: how a list's label files are stored, one of LIST_LABEL_MAPS: trainids as
            they are, Cityscapes labelIds, or ADE20K annotations (0 ignored, v -> v - 1).

    Returns:
        The Source.

    Raises:
        ValueError: for an unknown name, split or label_map, a missing argument, a num_classes
            that does not match the dataset, or a dataset that cannot be listed.
        FileNotFoundError: if data_dir or list_file does not exist.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name == "list":
        return _list_source(split, data_dir, list_file, num_classes, label_map)
    if name == "synthetic":
        source: Source = SyntheticSource(split, synthetic_size, _synthetic_count(
            split, synthetic_count), seed)
    elif name == "cityscapes":
        source = FileSource(name, split, cityscapes.list_examples(data_dir, split),
                            CITYSCAPES_NUM_CLASSES, CITYSCAPES_CLASS_NAMES)
    else:
        source = FileSource(name, split, ade20k.list_examples(data_dir, split),
                            ade20k.NUM_CLASSES, ADE20K_CLASS_NAMES)
    if num_classes is not None and num_classes != source.num_classes:
        raise ValueError(f"num_classes {num_classes} does not match the {name} dataset, which "
                         f"has {source.num_classes} classes")
    return source


def _synthetic_count(split: str, count: int | None) -> int:
    if count is None:
        return SYNTHETIC_TRAIN_COUNT if split == "train" else SYNTHETIC_VAL_COUNT
    if count < 1:
        raise ValueError(f"synthetic_count must be at least 1, got {count}")
    return count


def _list_source(split: str, data_dir: str | os.PathLike | None,
                 list_file: str | os.PathLike | None, num_classes: int | None,
                 label_map: str) -> FileSource:
    if list_file is None:
        raise ValueError(f"the list dataset needs --{split}_list (a file of image and label "
                         f"path pairs)")
    if num_classes is None or num_classes < 1:
        raise ValueError(f"the list dataset needs num_classes >= 1, got {num_classes}")
    if label_map not in LIST_LABEL_MAPS:
        raise ValueError(f"unknown label_map {label_map!r}; choose one of "
                         f"{', '.join(LIST_LABEL_MAPS)}")
    listing = read_list_file(list_file, data_dir, LIST_LABEL_MAPS[label_map]())
    return FileSource("list", split, listing, num_classes, class_names_for(num_classes))


def class_names_for(num_classes: int) -> tuple[str, ...]:
    """Cityscapes' 19 names, ADE20K's 150, else class_0, class_1, ..."""
    if num_classes == CITYSCAPES_NUM_CLASSES:
        return CITYSCAPES_CLASS_NAMES
    if num_classes == ade20k.NUM_CLASSES:
        return ADE20K_CLASS_NAMES
    return tuple(f"class_{index}" for index in range(num_classes))
