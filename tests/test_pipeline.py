"""The training augmentation pipeline, the eval pipeline and the synthetic source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from icnet.data import eval_dataset, make_source, synthetic, train_dataset
from icnet.data.pipeline import RGB_MEAN, augment

HEIGHT, WIDTH = 40, 64
NUM_CLASSES = 4
LEFT_COLOR, RIGHT_COLOR = (200, 10, 10), (10, 10, 200)


def _two_sided_list(tmp_path: Path, count: int = 3):
    """A list source whose images are LEFT_COLOR | RIGHT_COLOR with labels 1 | 2 (no 255)."""
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:, :WIDTH // 2], image[:, WIDTH // 2:] = LEFT_COLOR, RIGHT_COLOR
    label = np.full((HEIGHT, WIDTH), 2, np.uint8)
    label[:, :WIDTH // 2] = 1
    lines = []
    for index in range(count):
        Image.fromarray(image).save(tmp_path / f"i{index}.png")
        Image.fromarray(label).save(tmp_path / f"l{index}.png")
        lines.append(f"i{index}.png l{index}.png")
    (tmp_path / "list.txt").write_text("\n".join(lines))
    return make_source("list", "train", list_file=tmp_path / "list.txt", num_classes=NUM_CLASSES)


def _random_list(tmp_path: Path, count: int = 3):
    """A list source of random images with random labels in 0..NUM_CLASSES-1 and 255."""
    rng = np.random.default_rng(0)
    lines = []
    for index in range(count):
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        label = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), (HEIGHT, WIDTH))
        Image.fromarray(image).save(tmp_path / f"i{index}.png")
        Image.fromarray(label).save(tmp_path / f"l{index}.png")
        lines.append(f"i{index}.png l{index}.png")
    (tmp_path / "list.txt").write_text("\n".join(lines))
    return make_source("list", "train", list_file=tmp_path / "list.txt", num_classes=NUM_CLASSES)


def _batches(dataset: tf.data.Dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(count)]


def test_train_batches_shapes_dtypes_and_label_values(tmp_path):
    source = _random_list(tmp_path)
    dataset = train_dataset(source, (32, 48), batch_size=2, random_scale=True,
                            random_mirror=True, seed=1)
    assert dataset.element_spec[0].shape.as_list() == [2, 32, 48, 3]
    batches = _batches(dataset, 4)  # more than one pass over the three examples
    assert len(batches) == 4
    for images, labels in batches:
        assert images.dtype == np.float32 and images.shape == (2, 32, 48, 3)
        assert labels.dtype == np.int32 and labels.shape == (2, 32, 48)
        assert images.min() >= 0 and images.max() <= 255
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 255}


def test_padding_is_mean_color_and_ignore_label(tmp_path):
    source = _two_sided_list(tmp_path)
    dataset = train_dataset(source, (HEIGHT, WIDTH), batch_size=4, random_scale=True,
                            random_mirror=False, seed=0)
    padded = 0
    for images, labels in _batches(dataset, 3):
        pad = labels == 255  # the labels hold no 255, so these are exactly the padded pixels
        padded += np.count_nonzero(pad)
        np.testing.assert_allclose(images[pad], np.broadcast_to(RGB_MEAN, images[pad].shape),
                                   atol=1e-3)
    assert padded > 0  # a third of the scales are below 1


def test_augment_pads_bottom_right_without_scaling():
    image = tf.fill([HEIGHT, WIDTH, 3], tf.constant(9, tf.uint8))
    label = tf.fill([HEIGHT, WIDTH], tf.constant(3, tf.uint8))
    out_image, out_label = augment(image, label, (HEIGHT + 8, WIDTH + 8), random_scale=False,
                                   random_mirror=False, seed=tf.constant([5, 6], tf.int64))
    out_image, out_label = out_image.numpy(), out_label.numpy()
    np.testing.assert_array_equal(out_label[:HEIGHT, :WIDTH], 3)
    np.testing.assert_array_equal(out_image[:HEIGHT, :WIDTH], 9)
    assert (out_label[HEIGHT:] == 255).all() and (out_label[:, WIDTH:] == 255).all()
    np.testing.assert_allclose(out_image[HEIGHT:, :], np.broadcast_to(RGB_MEAN, (8, WIDTH + 8, 3)),
                               atol=1e-3)


def test_random_scale_resizes_as_tf1_resize_images():
    """A 2x crop holds the whole scaled image at its top left: it equals TF1's legacy resizes."""
    rng = np.random.default_rng(2)
    image = tf.constant(rng.integers(0, 256, (20, 30, 3), np.uint8))
    label = tf.constant(rng.integers(0, 19, (20, 30), np.uint8))
    scaled_sizes = set()
    for seed in range(4):
        out_image, out_label = augment(image, label, (40, 60), random_scale=True,
                                       random_mirror=False, seed=tf.constant([seed, 1], tf.int64))
        out_image, out_label = out_image.numpy(), out_label.numpy()
        height, width = int((out_label[:, 0] != 255).sum()), int((out_label[0] != 255).sum())
        scaled_sizes.add((height, width))
        expected_image = tf.compat.v1.image.resize_images(tf.cast(image, tf.float32),
                                                          (height, width))
        expected_label = tf.compat.v1.image.resize_nearest_neighbor(label[None, ..., None],
                                                                    (height, width))
        np.testing.assert_allclose(out_image[:height, :width], expected_image.numpy(), atol=1e-3)
        np.testing.assert_array_equal(out_label[:height, :width], expected_label[0, ..., 0])
    assert len(scaled_sizes) > 1


def test_mirror_flips_image_and_label_together(tmp_path):
    source = _two_sided_list(tmp_path)
    dataset = train_dataset(source, (HEIGHT, WIDTH), batch_size=8, random_scale=False,
                            random_mirror=True, seed=2)
    images, labels = _batches(dataset, 1)[0]
    assert len(images) == len(labels) == 8
    flipped = []
    for image, label in zip(images, labels):
        for value, color in ((1, LEFT_COLOR), (2, RIGHT_COLOR)):
            np.testing.assert_array_equal(image[label == value],
                                          np.broadcast_to(color, image[label == value].shape))
        flipped.append(bool(label[0, 0] == 2))
    assert any(flipped) and not all(flipped)


def test_same_seed_same_batches(tmp_path):
    source = _random_list(tmp_path)

    def batches(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return _batches(train_dataset(source, (24, 32), batch_size=2, random_scale=True,
                                      random_mirror=True, seed=seed), 3)

    first, again, other = batches(7), batches(7), batches(8)
    assert len(first) == len(again) == len(other) == 3
    for (images, labels), (images_again, labels_again) in zip(first, again):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(labels, labels_again)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_eval_dataset_one_image_at_a_time(tmp_path):
    source = _random_list(tmp_path)
    elements = list(eval_dataset(source))
    assert len(elements) == 3
    image, label, name = elements[0]
    assert image.dtype == tf.uint8 and image.shape == (1, HEIGHT, WIDTH, 3)
    assert label.dtype == tf.uint8 and label.shape == (1, HEIGHT, WIDTH)
    assert [n.numpy()[0].decode() for _, _, n in elements] == ["i0", "i1", "i2"]
    resized, resized_label, _ = next(iter(eval_dataset(source, resize=(48, 48))))
    assert resized.dtype == tf.float32 and resized.shape == (1, 48, 48, 3)
    expected = tf.compat.v1.image.resize_bilinear(image, (48, 48), align_corners=True)
    np.testing.assert_allclose(resized.numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_array_equal(resized_label.numpy(), label.numpy())


def test_synthetic_source_renders_the_split_scenes():
    source = make_source("synthetic", "val", synthetic_size=(48, 80), seed=3)
    assert len(source) == 100 and source.num_classes == 19
    assert len(make_source("synthetic", "train")) > 10**6
    image, label, name = next(iter(source.dataset().skip(2)))
    expected_image, expected_label = synthetic.render_scene(synthetic.split_seed(3, "val"), 2,
                                                            48, 80)
    np.testing.assert_array_equal(image.numpy(), expected_image)
    np.testing.assert_array_equal(label.numpy(), expected_label)
    assert name.numpy() == b"val_000002"
    images, labels = _batches(train_dataset(source, (32, 64), batch_size=2, random_scale=True,
                                            random_mirror=True, seed=0), 1)[0]
    assert images.shape == (2, 32, 64, 3) and labels.shape == (2, 32, 64)
    assert set(np.unique(labels)) <= set(range(19)) | {255}


def test_synthetic_cityscapes_layout_reads_back(tmp_path):
    synthetic.write_cityscapes_layout(tmp_path, num_train=2, num_val=1, height=32, width=64,
                                      seed=4)
    source = make_source("cityscapes", "val", data_dir=tmp_path)
    assert len(source) == 1
    image, label, name = next(iter(source.dataset()))
    expected_image, expected_label = synthetic.render_scene(synthetic.split_seed(4, "val"), 0,
                                                            32, 64)
    np.testing.assert_array_equal(image.numpy(), expected_image)
    np.testing.assert_array_equal(label.numpy(), expected_label)
    assert name.numpy() == b"synth_000000_000019"
    assert len(make_source("cityscapes", "train", data_dir=tmp_path)) == 2


def test_cached_pool_gives_the_same_batches_as_loading_each_time():
    source = make_source("synthetic", "train", synthetic_size=(64, 96), synthetic_count=5)
    kwargs = dict(crop_size=(48, 64), batch_size=3, random_scale=True, random_mirror=True,
                  seed=4)
    loaded = list(train_dataset(source, **kwargs).take(4))
    cached = list(train_dataset(source, cache=True, **kwargs).take(4))
    assert len(loaded) == len(cached) == 4
    for (images_a, labels_a), (images_b, labels_b) in zip(loaded, cached):
        np.testing.assert_array_equal(images_a.numpy(), images_b.numpy())
        np.testing.assert_array_equal(labels_a.numpy(), labels_b.numpy())
