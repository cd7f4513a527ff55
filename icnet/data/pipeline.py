"""Decoding, the reference's training augmentation, and the train and eval input pipelines.

Every dataset is a `Source`: a numbered collection whose element `i` is
`(image uint8 [H, W, 3] RGB, label uint8 [H, W] trainIds with 255 = ignore, name string)`.
"""

from __future__ import annotations

import abc
import os

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from icnet.data.labels import IGNORE_LABEL
from icnet.image_io import read_rgb
# The model subtracts RGB_MEAN, so image padding with it becomes 0.
from icnet.layers import RGB_MEAN, resize_bilinear

SCALE_RANGE = (0.5, 2.0)
AUTOTUNE = tf.data.AUTOTUNE


class Source(abc.ABC):
    """A dataset split whose elements are loaded by index inside a tf.data pipeline.

    Attributes:
        name: the dataset kind ("cityscapes", "ade20k", "list", "synthetic").
        split: "train" or "val".
        num_classes: number of classes; labels are in 0..num_classes-1 or 255.
        class_names: the class names, num_classes of them.
    """

    name: str
    split: str
    num_classes: int
    class_names: tuple[str, ...]

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of elements."""

    @abc.abstractmethod
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the first image, read without decoding all of it."""

    @abc.abstractmethod
    def load(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The element at an int64 scalar index: (image, label, name) tensors."""

    def dataset(self) -> tf.data.Dataset:
        """All elements in order, unbatched, loaded in parallel."""
        return tf.data.Dataset.range(len(self)).map(self.load, num_parallel_calls=AUTOTUNE)


def decode_label(path: str, label_lut: np.ndarray, num_classes: int) -> np.ndarray:
    """Reads a single-channel PNG label map and maps it to trainIds.

    Values that map to neither a class (0..num_classes-1) nor 255 become 255; their count is
    logged as a warning naming the file.

    Args:
        path: the label file, 8-bit grayscale or palette PNG.
        label_lut: uint8[256] table from stored values to trainIds.
        num_classes: number of classes.

    Returns:
        uint8 [H, W] trainIds, 255 = ignore.

    Raises:
        ValueError: naming the file if it cannot be decoded or is not single-channel 8-bit.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                raise ValueError(f"mode {image.mode}, expected single-channel 8-bit (L or P)")
            stored = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode label {path}: {error}") from error
    label = label_lut[stored]
    outside = (label >= num_classes) & (label != IGNORE_LABEL)
    count = int(np.count_nonzero(outside))
    if count:
        logging.warning("%s: %d label pixels outside classes 0..%d set to ignore (%d)",
                        path, count, num_classes - 1, IGNORE_LABEL)
        label[outside] = IGNORE_LABEL
    return label


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image file, from its header.

    Raises:
        ValueError: naming the file if it cannot be read.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
    return height, width


def load_files(image_path: tf.Tensor, label_path: tf.Tensor, label_lut: np.ndarray,
               num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes one image and its label inside a tf.data pipeline.

    Args:
        image_path: string scalar tensor.
        label_path: string scalar tensor.
        label_lut: uint8[256] table from stored label values to trainIds.
        num_classes: number of classes.

    Returns:
        (image uint8 [H, W, 3], label uint8 [H, W]); a decoding error names the file.
    """

    def read(image_file: bytes, label_file: bytes) -> tuple[np.ndarray, np.ndarray]:
        image_name, label_name = os.fsdecode(image_file), os.fsdecode(label_file)
        image = read_rgb(image_name, max_pixels=None)  # dataset files are the user's own
        label = decode_label(label_name, label_lut, num_classes)
        if image.shape[:2] != label.shape:
            raise ValueError(f"image {image_name} is {image.shape[0]}x{image.shape[1]} but its "
                             f"label {label_name} is {label.shape[0]}x{label.shape[1]}")
        return image, label

    image, label = tf.numpy_function(read, [image_path, label_path], [tf.uint8, tf.uint8],
                                     name="decode_example")
    image.set_shape([None, None, 3])
    label.set_shape([None, None])
    return image, label


def augment(image: tf.Tensor, label: tf.Tensor, crop_size: tuple[int, int], random_scale: bool,
            random_mirror: bool, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The reference augmentation: random scale, random mirror, random crop with padding.

    The scale is uniform in SCALE_RANGE (image bilinear, label nearest, both with TF1's legacy
    coordinates as the reference); the mirror flips image and label together with probability
    1/2; where the result is smaller than the crop it is padded at the bottom and right with
    RGB_MEAN (image) and 255 (label) before cropping.

    Args:
        image: uint8 [H, W, 3] RGB.
        label: uint8 [H, W] trainIds.
        crop_size: (height, width) of the output.
        random_scale: whether to scale randomly.
        random_mirror: whether to mirror randomly.
        seed: int64 [2] seed of the stateless random ops; the same seed gives the same output.

    Returns:
        (image float32 [h, w, 3] RGB in 0..255, label int32 [h, w]).
    """
    scale_seed, mirror_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = tf.cast(image, tf.float32)
    label = tf.cast(label, tf.int32)[..., tf.newaxis]
    if random_scale:
        scale = tf.random.stateless_uniform([], scale_seed, *SCALE_RANGE)
        size = tf.cast(tf.cast(tf.shape(image)[:2], tf.float32) * scale, tf.int32)
        size = tf.maximum(size, 1)
        # TF1's resize_images and resize_nearest_neighbor, as the reference scales.
        image = resize_bilinear(image[tf.newaxis], size, align_corners=False)[0]
        label = tf.raw_ops.ResizeNearestNeighbor(images=label[tf.newaxis], size=size,
                                                 align_corners=False,
                                                 half_pixel_centers=False)[0]
    if random_mirror:
        flip = tf.random.stateless_uniform([], mirror_seed) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    # Shifted so that zero padding means mean color and ignore label, as in the reference.
    both = tf.concat([image - RGB_MEAN, tf.cast(label - IGNORE_LABEL, tf.float32)], axis=-1)
    crop_height, crop_width = crop_size
    height, width = tf.shape(both)[0], tf.shape(both)[1]
    both = tf.image.pad_to_bounding_box(both, 0, 0, tf.maximum(height, crop_height),
                                        tf.maximum(width, crop_width))
    both = tf.image.stateless_random_crop(both, [crop_height, crop_width, 4], crop_seed)
    return both[..., :3] + RGB_MEAN, tf.cast(both[..., 3], tf.int32) + IGNORE_LABEL


def train_dataset(source: Source, crop_size: tuple[int, int], batch_size: int,
                  random_scale: bool, random_mirror: bool, seed: int,
                  shuffle_buffer: int = 10_000, cache: bool = False) -> tf.data.Dataset:
    """The repeating, shuffled, augmented training batches.

    The example order comes from a shuffle (of indices, or of the cached examples) seeded with
    `seed`, and each element's
    augmentation from stateless ops seeded with (seed, position in the stream), so the same seed
    gives the same batches.

    Args:
        source: the training split.
        crop_size: (height, width) of the crops.
        batch_size: crops per batch; an incomplete last batch never occurs (the data repeats).
        random_scale: scale each image by a random factor in SCALE_RANGE.
        random_mirror: mirror each image left-right with probability 1/2.
        seed: seed of the shuffle and the augmentation.
        shuffle_buffer: how many examples the shuffle draws from (the whole split when it has
            no more examples than this).
        cache: keep every decoded example in memory after its first load (for small splits,
            e.g. a fixed pool of synthetic scenes, so each is rendered or decoded once).

    Returns:
        Dataset of (images float32 [B, h, w, 3] RGB in 0..255, labels int32 [B, h, w]).
    """
    count = len(source)
    if cache:
        examples = source.dataset().map(lambda image, label, name: (image, label)).cache()
    else:
        examples = tf.data.Dataset.range(count)
    shuffled = (examples.shuffle(min(count, shuffle_buffer), seed=seed,
                                 reshuffle_each_iteration=True)
                .repeat()
                .enumerate())

    def element(position: tf.Tensor, example) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = example if cache else source.load(example)[:2]
        element_seed = tf.stack([tf.constant(seed, tf.int64), position])
        return augment(image, label, crop_size, random_scale, random_mirror, element_seed)

    return (shuffled.map(element, num_parallel_calls=AUTOTUNE)
            .batch(batch_size, drop_remainder=True)
            .prefetch(AUTOTUNE))


def eval_dataset(source: Source, resize: tuple[int, int] | None = None) -> tf.data.Dataset:
    """The split one image at a time, in order, without augmentation.

    Args:
        source: the evaluation split.
        resize: (height, width) to resize images to, bilinear with aligned corners as the
            reference's ADE20K evaluation (ade20k.EVAL_SIZE), kept in float32; labels keep
            their size. None keeps images as they are.

    Returns:
        Dataset of (image [1, H, W, 3] uint8, or float32 when resized, label uint8 [1, H, W],
        name string [1]).
    """
    batches = source.dataset().batch(1)
    if resize is not None:
        def resize_image(image: tf.Tensor, label: tf.Tensor,
                         name: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            return resize_bilinear(image, resize, align_corners=True), label, name

        batches = batches.map(resize_image, num_parallel_calls=AUTOTUNE)
    return batches.prefetch(AUTOTUNE)


def warn_if_crop_pads(source: Source, crop_size: tuple[int, int]) -> bool:
    """Warns, and returns True, when crops are larger than the (unscaled) images.

    Such crops are padded with the mean color and the ignore label, as the reference does (its
    720x720 ADE20K crops, for example); the warning says so in case the size is a mistake.
    Only the first image's size is read (its header, or a synthetic source's configured size).
    """
    height, width = source.image_size()
    crop_height, crop_width = crop_size
    if crop_height <= height and crop_width <= width:
        return False
    logging.warning("crop_size %dx%d is larger than the %s %s images, which are %dx%d (HxW, the "
                    "first one): crops will be padded with the mean color and ignored labels",
                    crop_height, crop_width, source.name, source.split, height, width)
    return True
