"""Reference .npy import/export: safety, round trips, BN folding and clear mismatch errors."""

import os
import pickle

import numpy as np
import pytest

from conftest import rel_l2
from icnet.checkpoint import load_checkpoint_weights, save_model_checkpoint
from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.inference import load_weights
from icnet.model import build_icnet
from icnet.weights import (UnsafeWeightsError, assign_weights, config_from_weights,
                           fold_batch_norm, load_npy_weights, model_weights, save_npy_weights)

SIZE = "193x385"


def write_pickled_npy(path, obj):
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (), }"
    header += b" " * (63 - len(header)) + b"\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
        pickle.dump(obj, f, protocol=2)


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_pickle_that_calls_a_function_is_refused_before_running(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    holder = np.empty((), dtype=object)
    holder[()] = {"conv1_sub1": {"weights": _Payload(target)}}
    write_pickled_npy(path, holder)
    with pytest.raises(UnsafeWeightsError, match=r"evil\.npy.*(posix|os)\.system"):
        load_npy_weights(str(path))
    assert not target.exists()
    # The same file really would run the command under a plain unpickler.
    np.load(path, allow_pickle=True)
    assert target.exists()


def test_not_a_weight_file_is_named(tmp_path):
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    with pytest.raises(ValueError, match="plain.npy"):
        load_npy_weights(str(plain))
    text = tmp_path / "text.npy"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.npy"):
        load_npy_weights(str(text))
    listed = tmp_path / "list.npy"
    write_pickled_npy(listed, np.array([1, 2], dtype=object))
    with pytest.raises(ValueError, match="list.npy"):
        load_npy_weights(str(listed))


def test_import_export_import_is_exact(tmp_path, quarter_bn):
    weights, _ = quarter_bn
    model = build_icnet(config_from_weights(weights), (161, 161))
    assign_weights(model, weights)
    path = str(tmp_path / "out.npy")
    save_npy_weights(model_weights(model), path)
    again = load_npy_weights(path)
    assert again.keys() == weights.keys()
    for layer, params in weights.items():
        assert again[layer].keys() == params.keys()
        for name, value in params.items():
            np.testing.assert_array_equal(again[layer][name], value)
    # Python 2 style reading (latin1) of our file works with plain NumPy too.
    plain = np.load(path, allow_pickle=True, encoding="latin1").item()
    assert plain.keys() == weights.keys()


def test_bn_folding_gives_the_same_logits(quarter_bn):
    weights, io = quarter_bn
    config = config_from_weights(weights)
    image = io[f"image_rgb_{SIZE}"][None].astype(np.float32)
    bn_model = build_icnet(config, (193, 385))
    assign_weights(bn_model, weights)
    merged_model = build_icnet(config.replace(batch_norm=False), (193, 385))
    assign_weights(merged_model, fold_batch_norm(weights))
    bn_logits = bn_model(image, training=False)["conv6_cls"].numpy()
    merged_logits = merged_model(image)["conv6_cls"].numpy()
    assert rel_l2(merged_logits, bn_logits) <= 1e-5
    assert rel_l2(merged_logits, io[f"conv6_cls_{SIZE}"]) <= 1e-5


def test_mismatches_are_reported_by_name(quarter_merged):
    weights, _ = quarter_merged
    model = build_icnet(config_from_weights(weights), (161, 161))
    broken = dict(weights)
    del broken["conv_sub2"]
    broken["conv9_extra"] = {"weights": np.zeros((1, 1, 1, 1), np.float32)}
    broken["conv1_sub1"] = {"weights": np.zeros((3, 3, 3, 5), np.float32),
                            "biases": np.zeros(5, np.float32)}
    with pytest.raises(ValueError) as error:
        assign_weights(model, broken)
    message = str(error.value)
    assert "missing layer `conv_sub2`" in message
    assert "unexpected layer `conv9_extra`" in message
    assert "`conv1_sub1` weights: shape (3, 3, 3, 5)" in message


def test_missing_or_resized_classifier_can_be_allowed(quarter_merged):
    weights, _ = quarter_merged
    config = config_from_weights(weights).replace(num_classes=7)
    model = build_icnet(config, (161, 161))
    with pytest.raises(ValueError, match="conv6_cls"):
        assign_weights(model, weights)
    assign_weights(model, weights, allow_missing_classifier=True)
    np.testing.assert_array_equal(model.get_layer("conv1_sub1").get_weights()[0],
                                  weights["conv1_sub1"]["weights"])
    without = {k: v for k, v in weights.items() if k != "conv6_cls"}
    assign_weights(model, without, allow_missing_classifier=True)


def test_training_checkpoint_loads_with_its_plan(tmp_path, quarter_bn):
    weights, _ = quarter_bn
    config = config_from_weights(weights)
    model = build_icnet(config, (161, 161))
    assign_weights(model, weights)
    save_model_checkpoint(model, config, str(tmp_path))
    loaded_config, loaded = load_checkpoint_weights(str(tmp_path))
    assert loaded_config == config
    np.testing.assert_array_equal(loaded["conv5_4_k1_bn"]["variance"],
                                  weights["conv5_4_k1_bn"]["variance"])
    other = ICNetConfig.from_filter_scale(0.5, 19)
    other.save(str(tmp_path / PLAN_FILENAME))
    with pytest.raises(ValueError, match="does not match"):
        load_checkpoint_weights(str(tmp_path))


def test_incomplete_weight_file_is_named(tmp_path, quarter_merged):
    weights, _ = quarter_merged
    without_layer = {k: v for k, v in weights.items() if k != "conv_sub2"}
    save_npy_weights(without_layer, str(tmp_path / "no_layer.npy"))
    with pytest.raises(ValueError, match=r"no_layer\.npy: lacks layers \['conv_sub2'\]"):
        load_weights(str(tmp_path / "no_layer.npy"))
    without_kernel = {**weights, "conv_sub4": {"biases": weights["conv_sub4"]["biases"]}}
    save_npy_weights(without_kernel, str(tmp_path / "no_kernel.npy"))
    with pytest.raises(ValueError, match=r"no_kernel\.npy: .*'weights'.*conv_sub4"):
        load_weights(str(tmp_path / "no_kernel.npy"))


def test_damaged_or_missing_checkpoint_is_named(tmp_path, quarter_bn):
    weights, _ = quarter_bn
    config = config_from_weights(weights)
    model = build_icnet(config, (161, 161))
    prefix = save_model_checkpoint(model, config, str(tmp_path / "run"))
    data = tmp_path / "run" / f"{os.path.basename(prefix)}.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ValueError, match="checkpoint is damaged or incomplete"):
        load_weights(str(tmp_path / "run"))
    data.unlink()
    with pytest.raises(ValueError, match="checkpoint is damaged or incomplete"):
        load_weights(str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match=r"typo: not a \.npy file, a model directory"):
        load_weights(str(tmp_path / "typo"))
