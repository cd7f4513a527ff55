"""Listing and decoding of Cityscapes, ADE20K and list-file datasets, and their error messages."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from icnet.data import ade20k, cityscapes, make_source, warn_if_crop_pads
from icnet.data.listfile import read_list_file
from icnet.data.pipeline import decode_label
from icnet.image_io import read_rgb

HEIGHT, WIDTH = 40, 64


def _write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _label(values: list[int]) -> np.ndarray:
    """A label map whose rows cycle through `values`."""
    return np.array(values, dtype=np.uint8)[np.arange(HEIGHT) % len(values)][:, None].repeat(
        WIDTH, axis=1)


def _cityscapes(root: Path, split: str, stems: dict[str, list[str]],
                label_suffix: str, values: list[int]) -> None:
    for city, names in stems.items():
        for index, stem in enumerate(names):
            _write(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _image(index))
            _write(root / "gtFine" / split / city / f"{stem}{label_suffix}", _label(values))


def _elements(source) -> list[tuple[np.ndarray, np.ndarray, str]]:
    return [(image.numpy(), label.numpy(), name.numpy().decode())
            for image, label, name in source.dataset()]


def test_cityscapes_train_ids(tmp_path):
    stems = {"zurich": ["zurich_000001_000019"],
             "aachen": ["aachen_000001_000019", "aachen_000000_000019"]}
    _cityscapes(tmp_path, "train", stems, "_gtFine_labelTrainIds.png", [0, 5, 18, 255])
    listing = cityscapes.list_examples(tmp_path, "train")
    assert [e.name for e in listing.examples] == [
        "aachen_000000_000019", "aachen_000001_000019", "zurich_000001_000019"]
    assert listing.examples[0].label_path.endswith(
        "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png")
    source = make_source("cityscapes", "train", data_dir=str(tmp_path))
    assert (source.num_classes, len(source.class_names), len(source)) == (19, 19, 3)
    image, label, name = _elements(source)[1]
    assert name == "aachen_000001_000019"
    np.testing.assert_array_equal(image, _image(0))
    np.testing.assert_array_equal(label, _label([0, 5, 18, 255]))


def test_cityscapes_label_ids_are_mapped_to_train_ids(tmp_path):
    _cityscapes(tmp_path, "val", {"lindau": ["lindau_000000_000019"]}, "_gtFine_labelIds.png",
                [7, 26, 0, 33, 1, 24])
    source = make_source("cityscapes", "val", data_dir=tmp_path)
    _, label, _ = _elements(source)[0]
    np.testing.assert_array_equal(label, _label([0, 13, 255, 18, 255, 11]))


def test_cityscapes_missing_label_is_named(tmp_path):
    _cityscapes(tmp_path, "train", {"bonn": ["bonn_000000_000019"]}, "_gtFine_labelTrainIds.png",
                [0])
    _write(tmp_path / "leftImg8bit/train/bonn/bonn_000001_000019_leftImg8bit.png", _image(1))
    with pytest.raises(ValueError, match="bonn_000001_000019_gtFine_labelTrainIds.png"):
        cityscapes.list_examples(tmp_path, "train")
    _write(tmp_path / "gtFine/train/bonn/bonn_000001_000019_gtFine_labelIds.png", _label([7]))
    with pytest.raises(ValueError, match="bonn_000000_000019_gtFine_labelIds.png: some images"):
        cityscapes.list_examples(tmp_path, "train")


def test_cityscapes_empty_and_missing_dirs(tmp_path):
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"leftImg8bit/val .*<city>/\*_leftImg8bit.png"):
        make_source("cityscapes", "val", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        make_source("cityscapes", "val", data_dir=tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="data_dir is not set"):
        make_source("cityscapes", "val")


@pytest.mark.parametrize("nested", [True, False])
def test_ade20k_annotations_shift_by_one(tmp_path, nested):
    root = tmp_path / "ADEChallengeData2016"
    for stem in ("ADE_val_00000002", "ADE_val_00000001"):
        _write(root / "images/validation" / f"{stem}.jpg", _image(2))
        _write(root / "annotations/validation" / f"{stem}.png", _label([0, 1, 150, 75]))
    source = make_source("ade20k", "val", data_dir=tmp_path if nested else root)
    assert (source.num_classes, source.class_names[0], len(source)) == (150, "wall", 2)
    assert [e.name for e in source.examples] == ["ADE_val_00000001", "ADE_val_00000002"]
    image, label, _ = _elements(source)[0]
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, _label([255, 0, 149, 74]))


def test_ade20k_missing_annotation_and_empty(tmp_path):
    with pytest.raises(ValueError, match=r"images/training \(looked for \*.jpg\)"):
        ade20k.list_examples(tmp_path, "train")
    _write(tmp_path / "images/training/ADE_train_00000001.jpg", _image(0))
    with pytest.raises(ValueError, match="annotations/training/ADE_train_00000001.png"):
        ade20k.list_examples(tmp_path, "train")


def test_list_file(tmp_path):
    _write(tmp_path / "data/img/a.png", _image(0))
    _write(tmp_path / "data/lbl/a.png", _label([3]))
    _write(tmp_path / "data/img/b.png", _image(1))
    _write(tmp_path / "data/lbl/b.png", _label([1, 2]))
    list_file = tmp_path / "train.txt"
    list_file.write_text("# pairs\nimg/b.png lbl/b.png\n\n  img/a.png   lbl/a.png\n")
    source = make_source("list", "train", data_dir=tmp_path / "data", list_file=list_file,
                         num_classes=4)
    assert [e.name for e in source.examples] == ["img/b", "img/a"]  # the list's order
    assert source.class_names == ("class_0", "class_1", "class_2", "class_3")
    labels = [label for _, label, _ in _elements(source)]
    np.testing.assert_array_equal(labels[0], _label([1, 2]))
    with pytest.raises(ValueError, match="num_classes"):
        make_source("list", "train", data_dir=tmp_path / "data", list_file=list_file)


def test_list_file_label_map_and_default_dir(tmp_path):
    _write(tmp_path / "a.jpg", _image(0))
    _write(tmp_path / "a.png", _label([0, 1, 150]))
    (tmp_path / "ade.txt").write_text("a.jpg a.png\n")
    source = make_source("list", "val", list_file=tmp_path / "ade.txt", num_classes=150,
                         label_map="ade20k")
    np.testing.assert_array_equal(_elements(source)[0][1], _label([255, 0, 149]))


def test_list_file_errors(tmp_path):
    _write(tmp_path / "a.png", _image(0))
    bad = tmp_path / "bad.txt"
    bad.write_text("a.png a.png\n# fine\na.png\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 3"):
        read_list_file(bad)
    missing = tmp_path / "missing.txt"
    missing.write_text("a.png no_label.png\n")
    with pytest.raises(ValueError, match="missing label file .*no_label.png"):
        read_list_file(missing)
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="empty.txt names no examples"):
        read_list_file(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_list_file(tmp_path / "nope.txt")


def test_label_outside_classes_becomes_ignore_with_warning(tmp_path, caplog):
    values = _label([2, 30, 255, 0])
    path = _write(tmp_path / "label.png", values)
    with caplog.at_level(logging.WARNING):
        label = decode_label(str(path), np.arange(256, dtype=np.uint8), num_classes=19)
    np.testing.assert_array_equal(label, _label([2, 255, 255, 0]))
    count = int(np.count_nonzero(values == 30))
    assert any(str(path) in r.getMessage() and f" {count} label pixels" in r.getMessage()
               for r in caplog.records)


def test_palette_label_png_reads_indices(tmp_path):
    palette_image = Image.fromarray(_label([4, 7]), "L").convert("P")
    palette_image.save(tmp_path / "p.png")
    label = decode_label(str(tmp_path / "p.png"), np.arange(256, dtype=np.uint8), 19)
    np.testing.assert_array_equal(label, _label([4, 7]))


def test_corrupt_image_error_names_file(tmp_path):
    _write(tmp_path / "ok.png", _image(0))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _write(tmp_path / "l.png", _label([1]))
    (tmp_path / "list.txt").write_text("broken.png l.png\n")
    with pytest.raises(ValueError, match="broken.png"):
        read_rgb(str(tmp_path / "broken.png"))
    source = make_source("list", "train", list_file=tmp_path / "list.txt", num_classes=19)
    with pytest.raises(tf.errors.OpError, match="broken.png"):
        _elements(source)


def test_image_label_size_mismatch_names_both(tmp_path):
    _write(tmp_path / "i.png", _image(0))
    _write(tmp_path / "l.png", np.zeros((HEIGHT, WIDTH + 1), np.uint8))
    (tmp_path / "list.txt").write_text("i.png l.png\n")
    source = make_source("list", "train", list_file=tmp_path / "list.txt", num_classes=19)
    with pytest.raises(tf.errors.OpError, match=r"i.png is 40x64 but its label .*l.png is 40x65"):
        _elements(source)


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    gray = _image(0)[..., 0]
    rgba = np.concatenate([_image(1), np.full((HEIGHT, WIDTH, 1), 7, np.uint8)], axis=-1)
    decoded_gray = read_rgb(str(_write(tmp_path / "g.png", gray, "L")))
    decoded_rgba = read_rgb(str(_write(tmp_path / "a.png", rgba, "RGBA")))
    assert decoded_gray.shape == (HEIGHT, WIDTH, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded_gray[..., channel], gray)
    np.testing.assert_array_equal(decoded_rgba, rgba[..., :3])


def test_16_bit_grayscale_is_scaled_to_8_bits_and_float_or_directory_refused(tmp_path):
    gray16 = np.random.default_rng(3).integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(gray16).save(path)
    assert Image.open(path).mode in ("I", "I;16")
    decoded = read_rgb(str(path))
    expected = np.round(gray16 / 257.0).astype(np.uint8)
    assert decoded.dtype == np.uint8 and decoded.shape == (HEIGHT, WIDTH, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], expected)
    Image.fromarray(gray16.astype(np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match=r"f.tiff: floating-point pixels"):
        read_rgb(str(tmp_path / "f.tiff"))
    with pytest.raises(ValueError, match="is a directory"):
        read_rgb(str(tmp_path))


def test_crop_larger_than_image_is_padded_with_a_warning(tmp_path, caplog):
    _cityscapes(tmp_path, "train", {"ulm": ["ulm_000000_000019"]}, "_gtFine_labelTrainIds.png",
                [0])
    source = make_source("cityscapes", "train", data_dir=tmp_path)
    assert not warn_if_crop_pads(source, (HEIGHT, WIDTH))
    assert not caplog.records
    assert warn_if_crop_pads(source, (48, 64))
    assert warn_if_crop_pads(source, (40, 65))
    assert re.search(r"crop_size 40x65 is larger .* 40x64 .* padded", caplog.text)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="synthetic, cityscapes, ade20k, list"):
        make_source("kitti", "train")
    with pytest.raises(ValueError, match="train, val"):
        make_source("synthetic", "test")
    with pytest.raises(ValueError, match="does not match"):
        make_source("synthetic", "val", num_classes=150)
