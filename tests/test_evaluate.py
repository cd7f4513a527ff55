"""train.evaluate: mIoU equals an independent numpy computation; submission PNGs round-trip."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO
from icnet.checkpoint import save_model_checkpoint
from icnet.config import ICNetConfig
from icnet.data import make_source
from icnet.data.labels import labelid_to_trainid_lut
from icnet.data.synthetic import write_cityscapes_layout
from icnet.evaluation import evaluate
from icnet.inference import Segmenter, load_weights
from icnet.metrics import ConfusionMatrix, miou, paired_miou_interval
from icnet.model import build_icnet
from icnet.weights import assign_weights, model_weights


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained tiny BN model saved as a training checkpoint with non-trivial BN stats."""
    directory = tmp_path_factory.mktemp("model")
    config = ICNetConfig.from_filter_scale(0.125, 19)
    model = build_icnet(config, (161, 161))
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta + rng.normal(0, 0.1, beta.shape),
                               mean + rng.normal(0, 0.1, mean.shape), variance * 2])
    save_model_checkpoint(model, config, str(directory))
    return directory


def numpy_miou(labels, predictions, num_classes):
    ious = []
    for c in range(num_classes):
        valid = labels != 255
        truth, guess = (labels == c) & valid, (predictions == c) & valid
        union = np.logical_or(truth, guess).sum()
        if union:
            ious.append(np.logical_and(truth, guess).sum() / union)
    return float(np.mean(ious))


def test_miou_matches_numpy_and_predictions_round_trip(tmp_path, model_dir):
    data_dir = tmp_path / "cityscapes"
    write_cityscapes_layout(str(data_dir), num_train=1, num_val=3, height=192, width=256)
    predictions_dir = tmp_path / "predictions"
    result_path = tmp_path / "eval.json"
    completed = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--dataset", "cityscapes", "--data_dir",
         str(data_dir), "--model", str(model_dir), "--eval_images", "3", "--json",
         str(result_path), "--write_predictions", str(predictions_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "mIoU" in completed.stdout
    result = json.loads(result_path.read_text())
    assert result["num_images"] == 3 and 0 <= result["miou"] <= 1

    segmenter = Segmenter(*load_weights(str(model_dir)))
    labels, predictions = [], []
    for label_path in sorted((data_dir / "gtFine" / "val").rglob("*_labelTrainIds.png")):
        image_path = str(label_path).replace("gtFine", "leftImg8bit", 1).replace(
            "_gtFine_labelTrainIds", "_leftImg8bit")
        image = np.asarray(Image.open(image_path).convert("RGB"))
        label = np.asarray(Image.open(label_path))
        # The reference's evaluate.py: logits of the padded image straight to the label size.
        logits = segmenter.logits(image)
        upsampled = tf.compat.v1.image.resize_bilinear(logits, label.shape, align_corners=True)
        classes = np.argmax(upsampled[0].numpy(), axis=-1).astype(np.uint8)
        labels.append(label)
        predictions.append(classes)
        stem = label_path.name.replace("_gtFine_labelTrainIds.png", "")
        written = np.asarray(Image.open(predictions_dir / f"{stem}.png"))
        np.testing.assert_array_equal(labelid_to_trainid_lut()[written], classes)
    labels, predictions = np.stack(labels), np.stack(predictions)
    assert result["miou"] == pytest.approx(numpy_miou(labels, predictions, 19), abs=1e-9)
    accuracy = float((labels == predictions)[labels != 255].mean())
    assert result["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_confusion_matrix_skips_ignore_and_counts_absent_classes():
    matrix = ConfusionMatrix(3)
    matrix.update(np.array([0, 0, 1, 255]), np.array([0, 1, 1, 2]))
    iou = matrix.per_class_iou()
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.5)
    assert np.isnan(iou[2])
    assert matrix.miou() == pytest.approx(0.5)
    assert matrix.pixel_accuracy() == pytest.approx(2 / 3)


def test_per_image_matrices_sum_to_the_total(tmp_path, model_dir):
    data_dir = tmp_path / "cityscapes"
    write_cityscapes_layout(str(data_dir), num_train=1, num_val=3, height=192, width=256)
    result = evaluate(*load_weights(str(model_dir)), make_source("cityscapes", "val",
                                                                  data_dir=str(data_dir)),
                      per_image=True)
    per_image = np.array(result["per_image_confusion"])
    assert per_image.shape == (3, 19, 19)
    np.testing.assert_array_equal(per_image.sum(0), result["confusion_matrix"])
    assert paired_miou_interval(per_image, per_image) == (0.0, 0.0)
    assert "per_image_confusion" not in evaluate(*load_weights(str(model_dir)), make_source(
        "cityscapes", "val", data_dir=str(data_dir)), 1)


def test_paired_interval_brackets_the_difference_and_follows_the_scenes():
    rng = np.random.default_rng(0)
    truth = [rng.integers(0, 3, 400) for _ in range(8)]

    def matrices(wrong):
        out = []
        for labels, fraction in zip(truth, wrong):
            guess = labels.copy()
            flip = rng.random(labels.size) < fraction
            guess[flip] = (guess[flip] + 1) % 3
            matrix = ConfusionMatrix(3)
            matrix.update(labels, guess)
            out.append(matrix.matrix)
        return np.array(out)

    good, bad = matrices([0.1] * 8), matrices([0.3] * 8)
    low, high = paired_miou_interval(good, bad)
    difference = miou(good.sum(0)) - miou(bad.sum(0))
    assert 0 < low <= difference <= high
    # A model better on some scenes and worse on others: the interval spans zero.
    mixed = matrices([0.0, 0.6] * 4)
    low, high = paired_miou_interval(mixed, matrices([0.3] * 8))
    assert low < 0 < high
    with pytest.raises(ValueError, match="same images"):
        paired_miou_interval(good, bad[:4])


def test_ade20k_follows_the_reference_protocol(tmp_path):
    """480x480 inputs (aligned-corner resize, no padding), logits resized to the label size."""
    root = tmp_path / "ADEChallengeData2016"
    rng = np.random.default_rng(4)
    for index, (height, width) in enumerate([(170, 230), (260, 200)]):
        stem = f"ADE_val_{index:08d}"
        for folder, array, suffix in [
                ("images", rng.integers(0, 256, (height, width, 3), np.uint8), "jpg"),
                ("annotations", rng.integers(0, 151, (height, width), np.uint8), "png")]:
            path = root / folder / "validation" / f"{stem}.{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    source = make_source("ade20k", "val", data_dir=root)
    config = ICNetConfig.from_filter_scale(0.125, 150, batch_norm=False)
    weights = model_weights(build_icnet(config, (161, 161)))
    result = evaluate(config, weights, source)

    model = build_icnet(config, (480, 480))
    assign_weights(model, weights)
    labels, predictions = [], []
    for image, label, _ in source.dataset():
        resized = tf.compat.v1.image.resize_bilinear(image[None], (480, 480), align_corners=True)
        logits = model(resized, training=False)["conv6_cls"]
        upsampled = tf.compat.v1.image.resize_bilinear(logits, label.shape, align_corners=True)
        labels.append(label.numpy().ravel())
        predictions.append(np.argmax(upsampled[0].numpy(), -1).ravel())
    labels, predictions = np.concatenate(labels), np.concatenate(predictions)
    assert result["num_images"] == 2 and len(np.unique(predictions)) > 5  # not a constant map
    assert result["miou"] == pytest.approx(numpy_miou(labels, predictions, 150), abs=1e-9)


def test_cityscapes_evaluation_uses_the_reference_pools(monkeypatch, tmp_path):
    """evaluate() builds its Segmenter with the Cityscapes evaluation pools for Cityscapes."""
    import icnet.evaluation as evaluation

    built = []

    class Recording(Segmenter):
        def __init__(self, config, weights, cityscapes_eval_pools=False):
            built.append(cityscapes_eval_pools)
            super().__init__(config, weights, cityscapes_eval_pools)

    monkeypatch.setattr(evaluation, "Segmenter", Recording)
    data_dir = tmp_path / "cityscapes"
    write_cityscapes_layout(str(data_dir), num_train=0, num_val=1, height=161, width=161)
    config = ICNetConfig.from_filter_scale(0.125, 19, batch_norm=False)
    weights = model_weights(build_icnet(config, (161, 161)))
    evaluate(config, weights, make_source("cityscapes", "val", data_dir=data_dir))
    evaluate(config, weights, make_source("synthetic", "val", synthetic_size=(161, 161)), 1)
    assert built == [True, False]
    with pytest.raises(ValueError, match="need logits_to_label"):
        evaluation.Protocol(resize=(480, 480))
