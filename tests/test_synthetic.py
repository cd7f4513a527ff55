"""Tests for the procedural street-scene renderer and its Cityscapes-layout writer."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from icnet.data.labels import CITYSCAPES_NUM_CLASSES, trainid_to_labelid_lut
from icnet.cli import parse_size
from icnet.exits import OptionError
from icnet.data.synthetic import render_scene, split_seed, write_cityscapes_layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digest(seed: int, index: int, height: int, width: int) -> str:
    image, label = render_scene(seed, index, height, width)
    return hashlib.sha256(image.tobytes() + label.tobytes()).hexdigest()


def test_same_arguments_give_identical_arrays():
    image_a, label_a = render_scene(3, 7, 96, 192)
    image_b, label_b = render_scene(3, 7, 96, 192)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)


def test_identical_in_another_process():
    code = ("from icnet.data.synthetic import render_scene; import hashlib; "
            "i, l = render_scene(3, 7, 96, 192); "
            "print(hashlib.sha256(i.tobytes() + l.tobytes()).hexdigest())")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == _digest(3, 7, 96, 192)


def test_different_index_or_seed_gives_different_scene():
    _, label = render_scene(3, 7, 96, 192)
    assert (render_scene(3, 8, 96, 192)[1] != label).mean() > 0.1
    assert (render_scene(4, 7, 96, 192)[1] != label).mean() > 0.1


@pytest.mark.parametrize("height,width", [(256, 512), (193, 385)])
def test_shapes_dtypes_and_label_values(height, width):
    image, label = render_scene(0, 1, height, width)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert label.shape == (height, width) and label.dtype == np.uint8
    assert label.max() < CITYSCAPES_NUM_CLASSES
    assert image.std() > 10  # textured, not blank


def test_rejects_empty_size():
    with pytest.raises(ValueError):
        render_scene(0, 0, 0, 10)


def test_all_classes_appear_over_40_images():
    seen = np.zeros(256, bool)
    for index in range(40):
        _, label = render_scene(split_seed(0, "val"), index, 256, 512)
        seen[np.unique(label)] = True
    assert seen[:CITYSCAPES_NUM_CLASSES].all(), np.nonzero(~seen[:CITYSCAPES_NUM_CLASSES])
    assert not seen[CITYSCAPES_NUM_CLASSES:].any()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_same_scene_at_two_resolutions(index):
    _, small = render_scene(5, index, 128, 256)
    _, big = render_scene(5, index, 512, 1024)
    assert (big[1::4, 1::4] == small).mean() >= 0.8


def test_split_seed_separates_splits():
    seeds = {split_seed(seed, split) for seed in range(5) for split in ("train", "val", "test")}
    assert len(seeds) == 15
    _, train = render_scene(split_seed(0, "train"), 0, 64, 128)
    _, val = render_scene(split_seed(0, "val"), 0, 64, 128)
    assert (train != val).mean() > 0.1
    with pytest.raises(ValueError):
        split_seed(0, "validation")
    with pytest.raises(ValueError):
        split_seed(-1, "train")


def test_writer_produces_cityscapes_layout(tmp_path):
    write_cityscapes_layout(str(tmp_path), num_train=2, num_val=1, height=48, width=96, seed=2)
    lut = trainid_to_labelid_lut()
    for split, count in (("train", 2), ("val", 1)):
        for index in range(count):
            stem = f"synth_{index:06d}_000019"
            image_dir = tmp_path / "leftImg8bit" / split / "synth"
            image = np.asarray(Image.open(image_dir / f"{stem}_leftImg8bit.png"))
            label_dir = tmp_path / "gtFine" / split / "synth"
            train_ids = np.asarray(Image.open(label_dir / f"{stem}_gtFine_labelTrainIds.png"))
            label_ids = np.asarray(Image.open(label_dir / f"{stem}_gtFine_labelIds.png"))
            expected_image, expected_label = render_scene(split_seed(2, split), index, 48, 96)
            np.testing.assert_array_equal(image, expected_image)
            np.testing.assert_array_equal(train_ids, expected_label)
            np.testing.assert_array_equal(label_ids, lut[train_ids])
    assert not list(tmp_path.rglob("*.tmp"))
    # A second run replaces the synth city: no scenes of the first run's size or count remain.
    other_city = tmp_path / "leftImg8bit" / "train" / "ulm"
    other_city.mkdir()
    write_cityscapes_layout(str(tmp_path), num_train=1, num_val=1, height=32, width=64, seed=2)
    images = sorted((tmp_path / "leftImg8bit").rglob("synth_*.png"))
    assert [Image.open(p).size for p in images] == [(64, 32), (64, 32)]
    assert len(list((tmp_path / "gtFine").rglob("*.png"))) == 4 and other_city.is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        write_cityscapes_layout(str(tmp_path / "file"), 1, 0, 32, 64)


@pytest.mark.parametrize("text", ["512", "512x", "ax10", "0x10", "10x-3", "10x10x3"])
def test_parse_size_rejects_malformed(text):
    with pytest.raises(OptionError, match="^size: ") as error:
        parse_size(text, "size")
    assert error.value.option == "size"


def test_parse_size_accepts_height_by_width():
    assert parse_size("193x385", "size") == (193, 385)


def test_cli_rejects_bad_size(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "icnet.data.synthetic", "--output_dir", str(tmp_path), "--size",
         "12by34"],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    assert "--size" in result.stderr
    assert not (tmp_path / "leftImg8bit").exists()
