"""The port reproduces the reference graph: golden logits, parameter counts and FLOPs."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tf_keras

from conftest import REPO, rel_l2, shared_golden_path
from icnet.config import ICNetConfig, reference_plan
from icnet.inference import Segmenter, padded_size
from icnet.model import CITYSCAPES_EVAL_POOLS, build_icnet, pyramid_pooling
from icnet.profiling import model_profile
from icnet.weights import assign_weights, config_from_weights, load_npy_weights, model_weights


def run_golden(weights, io, size, outputs=("conv6_cls",)):
    config = config_from_weights(weights)
    height, width = map(int, size.split("x"))
    model = build_icnet(config, (height, width))
    assign_weights(model, weights)
    got = model(io[f"image_rgb_{size}"][None].astype(np.float32), training=False)
    for name in outputs:
        reference = io[f"{name}_{size}"]
        assert got[name].shape == reference.shape
        assert rel_l2(got[name].numpy(), reference) <= 1e-5, name
        assert np.array_equal(got[name].numpy().argmax(-1), reference.argmax(-1)), name


def test_quarter_merged_matches_golden(quarter_merged):
    run_golden(*quarter_merged, "193x385")


def test_quarter_bn_matches_golden_with_heads(quarter_bn):
    run_golden(*quarter_bn, "193x385", outputs=("conv6_cls", "sub4_out", "sub24_out"))


@pytest.mark.parametrize("size", ["193x385", "321x641"])
def test_full_width_merged_matches_golden(size):
    weights = load_npy_weights(shared_golden_path("icnet_cityscapes_merged_weights.npy"))
    io = np.load(shared_golden_path("icnet_cityscapes_merged_io.npz"))
    run_golden(weights, io, size)


@pytest.mark.parametrize("batch_norm,filter_scale,num_classes,params", [
    (False, 1, 19, 6_685_715), (False, 1, 150, 6_702_614),
    (False, 2, 19, 26_705_939), (False, 2, 150, 26_739_606),
    (True, 1, 19, 6_735_865), (True, 1, 150, 6_803_330),
    (True, 2, 19, 26_806_201), (True, 2, 150, 26_940_738),
])
def test_parameter_counts_equal_reference(batch_norm, filter_scale, num_classes, params):
    config = ICNetConfig.from_filter_scale(filter_scale, num_classes, batch_norm)
    assert build_icnet(config, (161, 161)).count_params() == params


def test_flops_fs1_at_1024x2048():
    profile = model_profile(ICNetConfig.from_filter_scale(1, 19, batch_norm=False), (1024, 2048))
    assert profile["params"] == 6_685_715
    assert abs(profile["flops"] / 58.2e9 - 1) <= 0.01


def test_profile_model_cli_fs2():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile_model", "--filter_scale", "2",
         "--num_classes", "19", "--input_size", "1024x2048"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    profile = json.loads(out.strip().splitlines()[-1])
    assert profile["params"] == 26_705_939
    assert abs(profile["flops"] / 229.1e9 - 1) <= 0.01


def test_non_32k1_sizes_resize_before_sums():
    config = ICNetConfig.from_filter_scale(0.125, 19)
    model = build_icnet(config, (192, 256))
    names = {layer.name for layer in model.layers}
    assert {"sub12_sum_resize", "sub24_sum_resize"} <= names
    out = model(np.zeros((1, 192, 256, 3), np.float32))
    assert out["conv6_cls"].shape == (1, 47, 63, 19)
    assert "sub12_sum_resize" not in {l.name for l in build_icnet(config, (193, 257)).layers}


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="at least 161x161"):
        build_icnet(ICNetConfig.from_filter_scale(0.125, 19), (160, 400))


def test_plan_errors_name_the_layer():
    plan = reference_plan(1)
    plan.pop("conv_sub4")
    with pytest.raises(ValueError, match="conv_sub4"):
        ICNetConfig(19, plan)
    plan = reference_plan(1)
    plan["conv_sub4"] = 64  # must equal conv3_1_sub2_proj for the fusion sum
    with pytest.raises(ValueError, match="sub24_sum"):
        build_icnet(ICNetConfig(19, plan), (161, 161))


def test_plan_json_round_trip(tmp_path):
    config = ICNetConfig.from_filter_scale(2, 150, batch_norm=False)
    config.save(str(tmp_path / "plan.json"))
    assert ICNetConfig.load(str(tmp_path / "plan.json")) == config
    (tmp_path / "bad.json").write_text('{"num_classes": 3}')
    with pytest.raises(ValueError, match="bad.json"):
        ICNetConfig.load(str(tmp_path / "bad.json"))


@pytest.mark.parametrize("n,expected", [(1, 161), (161, 161), (162, 193), (480, 481),
                                        (1024, 1025), (1025, 1025)])
def test_padded_size(n, expected):
    assert padded_size(n) == expected


def test_cityscapes_eval_pools_are_the_reference_windows():
    """At 33x65 the evaluation pools average overlapping windows that cover the whole map."""
    features = tf_keras.Input((33, 65, 3), batch_size=1)
    summed = pyramid_pooling(features, cityscapes_eval_pools=True)
    graph = tf_keras.Model(features, summed)
    pools = tf_keras.Model(features, {b: graph.get_layer(f"conv5_3_pool{b}").output
                                      for b in CITYSCAPES_EVAL_POOLS})
    x = np.random.default_rng(0).random((1, 33, 65, 3), np.float32)
    pooled = pools(x)
    for bins, ((kh, kw), (sh, sw)) in CITYSCAPES_EVAL_POOLS.items():
        assert (bins - 1) * sh + kh == 33 and (bins - 1) * sw + kw == 65  # covers the map
        got = pooled[bins].numpy()
        assert got.shape == (1, bins, bins, 3)
        for i in range(bins):
            for j in range(bins):
                window = x[0, i * sh:i * sh + kh, j * sw:j * sw + kw]
                np.testing.assert_allclose(got[0, i, j], window.mean((0, 1)), rtol=1e-5)
    with pytest.raises(ValueError, match="33x65 conv5_3 map"):
        pyramid_pooling(tf_keras.Input((17, 33, 3), batch_size=1), cityscapes_eval_pools=True)


def test_segmenter_uses_the_evaluation_pools_only_at_1025x2049():
    config = ICNetConfig.from_filter_scale(0.0625, 19, batch_norm=False)
    weights = model_weights(build_icnet(config, (161, 161)))
    segmenter = Segmenter(config, weights, cityscapes_eval_pools=True)
    pool3 = segmenter.model_for((1025, 2049)).get_layer("conv5_3_pool3")
    assert (pool3.pool_size, pool3.strides) == ((13, 25), (10, 20))
    pool3 = Segmenter(config, weights).model_for((1025, 2049)).get_layer("conv5_3_pool3")
    assert (pool3.pool_size, pool3.strides) == ((11, 21), (11, 21))
    pool3 = segmenter.model_for((513, 1025)).get_layer("conv5_3_pool3")
    assert (pool3.pool_size, pool3.strides) == ((5, 11), (5, 11))
