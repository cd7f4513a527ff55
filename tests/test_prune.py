"""deploy.prune: graph-derived groups, the paper's widths, exact surgery, overrides, the binary."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tf_keras

from conftest import REPO, rel_l2
from benchmarks.pruning_study_lib import timing_cpu
from deploy.prune_lib import PruneOptions, prune_model
from deploy.pruning import (dependency_groups, group_keeps, kept_width, l1_importance,
                            mask_weights, model_groups, parse_overrides, parse_schedule, prune,
                            prune_plan, select_channels, slice_weights)
from deploy.report import PruneReport
from icnet.exits import OptionError
from icnet.checkpoint import load_checkpoint_weights, save_model_checkpoint
from icnet.config import CLASSIFIERS, REFERENCE_WIDTHS, ICNetConfig, reference_plan
from icnet.inference import Segmenter
from icnet.model import build_icnet
from icnet.profiling import model_profile
from icnet.weights import assign_weights, fold_batch_norm, model_weights

TINY = ICNetConfig(19, reference_plan(0.125))


@pytest.fixture(scope="module")
def tiny_groups():
    return model_groups(TINY)


def group_of(groups, conv):
    (group,) = [g for g in groups if conv in g.producers]
    return group


def random_bn_weights(config, seed=0):
    """Glorot kernels from the builder, plus random (non-trivial) BN statistics."""
    rng = np.random.default_rng(seed)
    tf_keras.utils.set_random_seed(seed)
    weights = model_weights(build_icnet(config, (161, 161)))
    for name, params in weights.items():
        if name.endswith("_bn"):
            width = params["scale"].shape
            params["scale"] = rng.uniform(0.5, 1.5, width).astype(np.float32)
            params["offset"] = rng.normal(0, 0.2, width).astype(np.float32)
            params["mean"] = rng.normal(0, 0.2, width).astype(np.float32)
            params["variance"] = rng.uniform(0.5, 1.5, width).astype(np.float32)
    return weights


def save_tiny_checkpoint(directory, config, plan_config=None, seed=0):
    model = build_icnet(config, (161, 161))
    assign_weights(model, random_bn_weights(config, seed))
    save_model_checkpoint(model, plan_config or config, str(directory))


def test_groups_come_from_the_graph(tiny_groups):
    assert group_of(tiny_groups, "conv2_1_1x1_proj") is group_of(tiny_groups,
                                                                  "conv2_3_1x1_increase")
    assert group_of(tiny_groups, "conv_sub4") is group_of(tiny_groups, "conv3_1_sub2_proj")
    assert group_of(tiny_groups, "conv_sub2") is group_of(tiny_groups, "conv3_sub1_proj")
    conv5 = group_of(tiny_groups, "conv5_1_1x1_proj")
    assert set(conv5.producers) == {"conv5_1_1x1_proj", "conv5_1_1x1_increase",
                                    "conv5_2_1x1_increase", "conv5_3_1x1_increase"}
    assert "conv5_3_sum" in conv5.sums and "conv5_4_k1" in conv5.consumers
    assert set(conv5.batch_norms) == {f"{p}_bn" for p in conv5.producers}
    assert group_of(tiny_groups, "conv3_1_1x1_proj").sums == (
        "conv3_1", "conv3_2", "conv3_3", "conv3_4")
    # Standalone convs are groups of one; every plan conv is in exactly one group.
    assert group_of(tiny_groups, "conv4_2_3x3").producers == ("conv4_2_3x3",)
    producers = [p for g in tiny_groups for p in g.producers]
    assert sorted(producers) == sorted(REFERENCE_WIDTHS)
    # Classifiers (and the input) are never pruned, only their inputs are sliced.
    assert not set(CLASSIFIERS) & set(producers)
    assert "conv6_cls" in group_of(tiny_groups, "conv_sub2").consumers
    assert "sub24_out" in group_of(tiny_groups, "conv_sub4").consumers
    assert "conv1_sub1" not in {c for g in tiny_groups for c in g.consumers}
    assert "conv2_1_1x1_proj" in group_of(tiny_groups, "conv2_1_1x1_proj").describe()
    assert "conv2_1_1x1_proj" in repr(group_of(tiny_groups, "conv2_1_1x1_proj"))


def test_half_of_full_width_is_exactly_the_released_plan():
    full = ICNetConfig.from_filter_scale(2, 19)
    model = build_icnet(full, (161, 161))
    groups = dependency_groups(model)
    plan = prune_plan(full.plan, groups, 0.5)
    assert plan == reference_plan(1)
    weights = model_weights(model)
    pruned = slice_weights(weights, groups, select_channels(weights, groups, plan))
    expected = model_weights(build_icnet(ICNetConfig(19, plan), (161, 161)))
    assert {(k, p): v.shape for k, ps in pruned.items() for p, v in ps.items()} == {
        (k, p): v.shape for k, ps in expected.items() for p, v in ps.items()}
    profile = model_profile(ICNetConfig(19, plan, batch_norm=False), (1024, 2048))
    assert abs(profile["flops"] / 58.2e9 - 1) <= 0.01


def test_pruned_logits_equal_full_model_with_dropped_channels_zeroed(tiny_groups):
    weights = random_bn_weights(TINY, seed=1)
    plan = prune_plan(TINY.plan, tiny_groups, 0.5)
    kept = select_channels(weights, tiny_groups, plan)
    pruned = slice_weights(weights, tiny_groups, kept)
    # The full model with the dropped channels masked (BN gamma = beta = 0 there).
    zeroed = mask_weights(weights, tiny_groups, kept)
    for group in tiny_groups:
        dropped = np.setdiff1d(np.arange(group.channels), kept[group.name])
        assert dropped.size == group.channels - plan[group.producers[0]]
        for bn in group.batch_norms:
            assert not zeroed[bn]["scale"][dropped].any() and weights[bn]["scale"].all()
    size = (193, 257)
    full_model = build_icnet(TINY, size)
    assign_weights(full_model, zeroed)
    small_model = build_icnet(TINY.replace(plan=plan), size)
    assign_weights(small_model, pruned)
    images = np.random.default_rng(2).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    expected, actual = full_model(images, training=False), small_model(images, training=False)
    for name in ("conv6_cls", "sub4_out", "sub24_out"):
        assert rel_l2(actual[name].numpy(), expected[name].numpy()) <= 1e-5, name
    # So does a Segmenter of the full model whose weights are replaced by the masked ones
    # (how the layer sensitivity scores every cut with one model), BN-merged.
    segmenter = Segmenter(TINY, weights)
    unmasked = segmenter.logits(images[0])
    segmenter.load(zeroed)
    masked = segmenter.logits(images[0])
    assert rel_l2(masked, actual["conv6_cls"].numpy()[:1]) <= 1e-5
    assert rel_l2(unmasked, actual["conv6_cls"].numpy()[:1]) > 1e-2
    # The weights themselves were not touched, and slicing commutes with BN folding (biases).
    assert weights["conv5_1_1x1_proj"]["weights"].shape[-1] == TINY.plan["conv5_1_1x1_proj"]
    merged_groups = dependency_groups(build_icnet(TINY.replace(batch_norm=False), (161, 161)))
    folded_then_sliced = slice_weights(fold_batch_norm(weights), merged_groups, kept)
    for name, params in fold_batch_norm(pruned).items():
        for param, value in params.items():
            np.testing.assert_allclose(folded_then_sliced[name][param], value, rtol=1e-6,
                                       atol=1e-7)


def test_keep_one_is_the_identity(tiny_groups):
    weights = random_bn_weights(TINY)
    assert prune_plan(TINY.plan, tiny_groups, 1.0) == TINY.plan
    config, pruned = prune(TINY, weights, TINY.plan)
    assert config == TINY
    assert weights.keys() == pruned.keys()
    for name, params in weights.items():
        for param, value in params.items():
            assert np.array_equal(pruned[name][param], value), (name, param)


def test_every_group_member_has_one_width_after_pruning(tiny_groups):
    weights = random_bn_weights(TINY)
    plan = prune_plan(TINY.plan, tiny_groups, 0.6, round_to=4)
    config, pruned = prune(TINY, weights, plan)
    for group in tiny_groups:
        width = plan[group.producers[0]]
        assert width == kept_width(group.channels, 0.6, 4)
        assert width % 4 == 0 or width == group.channels
        assert {pruned[p]["weights"].shape[-1] for p in group.producers} == {width}
        assert {pruned[b]["scale"].shape[0] for b in group.batch_norms} == {width}
        assert {pruned[c]["weights"].shape[2] for c in group.consumers} == {width}
    # The kept channels of a group are its largest summed kernel L1 norms.
    group = group_of(tiny_groups, "conv4_1_1x1_proj")
    importance = l1_importance(weights, group)
    kept = select_channels(weights, tiny_groups, plan)[group.name]
    assert np.all(np.diff(kept) > 0)
    assert importance[kept].min() >= np.delete(importance, kept).max()
    assert kept_width(8, 0.5) == 4 and kept_width(256, 0.75) == 192 and kept_width(3, 0.01) == 1


def test_overrides_change_only_the_matched_groups(tiny_groups):
    keeps = group_keeps(tiny_groups, 0.5, parse_overrides("conv5=0.75,sub1=1.0"))
    changed = {name for name, keep in keeps.items() if keep != 0.5}
    conv5 = {g.name for g in tiny_groups if any(p.startswith("conv5_") for p in g.producers)}
    assert changed == conv5 | {"conv1_sub1", "conv2_sub1", "conv3_sub1"}
    plan = prune_plan(TINY.plan, tiny_groups, keeps)
    base = prune_plan(TINY.plan, tiny_groups, 0.5)
    assert plan["conv5_1_1x1_proj"] == kept_width(TINY.plan["conv5_1_1x1_proj"], 0.75)
    assert plan["conv2_sub1"] == TINY.plan["conv2_sub1"]
    assert plan["conv3_sub1_proj"] == base["conv3_sub1_proj"]  # a CFF group, not `*_sub1`
    assert {k for k in plan if plan[k] != base[k]} == {
        p for g in tiny_groups if g.name in changed for p in g.producers}
    # A later key wins where keys overlap.
    keeps = group_keeps(tiny_groups, 0.5, [("conv5", 0.75), ("conv5_4_k1", 1.0)])
    assert keeps["conv5_4_k1"] == 1.0 and keeps["conv5_1_1x1_proj"] == 0.75


def test_bad_keeps_and_override_keys_are_named(tiny_groups, tmp_path):
    with pytest.raises(ValueError, match="conv9"):
        group_keeps(tiny_groups, 0.5, [("conv9", 0.5)])
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=str(bad)):
            prune_plan(TINY.plan, tiny_groups, bad)
    with pytest.raises(OptionError, match=r"keep_overrides: conv5 must be in \(0, 1\], got 1.2"):
        parse_overrides("conv5=1.2")
    with pytest.raises(OptionError, match="keep_overrides: expected KEY=KEEP.*conv5:0.6"):
        parse_overrides("conv5:0.6")
    with pytest.raises(OptionError, match="schedule: keeps must not increase"):
        parse_schedule("0.5,0.75")
    with pytest.raises(OptionError, match="schedule: expected a fraction"):
        parse_schedule("half")
    assert parse_schedule("0.75, 0.5") == (0.75, 0.5)
    with pytest.raises(ValueError, match="grow"):
        prune(TINY, random_bn_weights(TINY), reference_plan(0.25))
    with pytest.raises(OptionError, match="increase"):
        PruneOptions(schedule=(0.5, 0.75))
    with pytest.raises(OptionError, match="criterion: unknown 'l7'"):
        PruneOptions(criterion="l7")
    source = tmp_path / "runs" / "fs2"
    save_tiny_checkpoint(source, TINY)
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        prune_model(str(source), str(existing), PruneOptions())
    # --overwrite never replaces the source model or a directory that is not a model dir.
    for output in (source, tmp_path / "runs"):
        with pytest.raises(OptionError, match="would replace the source model"):
            prune_model(str(source), str(output), PruneOptions(), overwrite=True)
    os.symlink(source, tmp_path / "latest")
    with pytest.raises(OptionError, match="would replace the source model"):
        prune_model(str(tmp_path / "latest"), str(source), PruneOptions(), overwrite=True)
    (existing / "plan.json").write_text("{}")  # an export root has one, but no checkpoint
    with pytest.raises(ValueError, match="not a model directory"):
        prune_model(str(source), str(existing), PruneOptions(), overwrite=True)
    assert (existing / "notes.txt").read_text() == "keep me"
    weights = tmp_path / "weights.npy"
    weights.write_bytes(b"precious")
    with pytest.raises(ValueError, match="is not a directory"):
        prune_model(str(source), str(weights), PruneOptions(), overwrite=True)
    assert weights.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["exists", "latest", "runs", "weights.npy"]


def test_checkpoint_not_matching_its_plan_is_a_clear_error(tmp_path):
    save_tiny_checkpoint(tmp_path / "src", TINY, plan_config=ICNetConfig(19, reference_plan(0.25)))
    with pytest.raises(ValueError, match="does not match its plan.json"):
        prune_model(str(tmp_path / "src"), str(tmp_path / "out"), PruneOptions())
    assert sorted(os.listdir(tmp_path)) == ["src"]
    result = subprocess.run(
        [sys.executable, "-m", "deploy.prune", "--model", str(tmp_path / "src"),
         "--output_dir", str(tmp_path / "out"), "--keep", "1.5"],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "error: --keep: keep must be in (0, 1], got 1.5"


PRUNE_ARGS = ["--finetune_steps", "2", "--crop_size", "161x161", "--synthetic_size", "192x256",
              "--batch_size", "2", "--synthetic_count", "8", "--eval_images", "2",
              "--input_size", "193x257", "--log_every", "1"]


def test_binary_schedule_with_finetuning_end_to_end(tmp_path):
    config = ICNetConfig(19, reference_plan(0.125))
    save_tiny_checkpoint(tmp_path / "src", config)
    dst = tmp_path / "pruned"
    result = subprocess.run(
        [sys.executable, "-m", "deploy.prune", "--model", str(tmp_path / "src"),
         "--output_dir", str(dst), "--keep", "0.75,0.5", "--control", *PRUNE_ARGS],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage 2/2 done" in result.stderr
    loaded, weights = load_checkpoint_weights(str(dst))
    groups = model_groups(config)
    assert loaded.plan == prune_plan(config.plan, groups, 0.5)
    report = PruneReport.read(str(dst))
    assert [stage.keep for stage in report.stages] == [0.75, 0.5]
    for stage in report.stages:
        assert stage.finetune.steps == 2 and 0 <= stage.measure.miou <= 1
        assert stage.miou_before_finetune is not None
    assert report.original.flops > report.stages[0].measure.flops > report.stages[1].measure.flops
    assert sorted(os.listdir(dst / "finetune")) == ["stage_1", "stage_2"]
    # The equal-budget control: the source fine-tuned as long as both stages together.
    assert report.control.steps == 4 and 0 <= report.control.miou <= 1
    assert report.drop_against_control == pytest.approx(
        report.final.measure.miou - report.control.miou)
    assert load_checkpoint_weights(str(dst / "control"))[0].plan == config.plan
    assert sorted(os.listdir(tmp_path)) == ["pruned", "src"]  # no staging, no work dir left
    # The other tools read it: inference/evaluation/training load it, profiling reads the plan.
    from deploy.predict import run
    from icnet.checkpoint import load_plan
    from icnet.inference import load_weights
    assert load_weights(str(dst))[0] == loaded and load_plan(str(dst)) == loaded
    from PIL import Image
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "in.png")
    assert run(str(dst), str(tmp_path / "in.png"), str(tmp_path / "out.png")).shape == (64, 96)


def test_every_criterion_scores_every_channel_of_a_group(tiny_groups):
    from deploy.pruning import CRITERIA, Evidence
    weights = random_bn_weights(TINY, seed=3)
    group = group_of(tiny_groups, "conv4_1_1x1_proj")  # a residual stream: several producers
    taylor = {name: np.random.default_rng(4).random(width) for name, width in TINY.plan.items()}
    evidence = Evidence(taylor=taylor, seed=5)
    scores = {name: criterion(weights, group, evidence) for name, criterion in CRITERIA.items()}
    for name, value in scores.items():
        assert value.shape == (group.channels,) and np.all(np.isfinite(value)), name
    kernels = [np.asarray(weights[p]["weights"], np.float64).reshape(-1, group.channels)
               for p in group.producers]
    np.testing.assert_allclose(scores["l1"], sum(np.abs(k).sum(0) for k in kernels))
    np.testing.assert_allclose(scores["l2"], sum(np.sqrt((k ** 2).sum(0)) for k in kernels))
    np.testing.assert_allclose(scores["bn_scale"], sum(np.abs(weights[b]["scale"])
                                                       for b in group.batch_norms))
    np.testing.assert_allclose(scores["taylor"], sum(taylor[p] for p in group.producers))
    again = CRITERIA["random"](weights, group, Evidence(seed=5))
    other = CRITERIA["random"](weights, group, Evidence(seed=6))
    assert np.array_equal(again, scores["random"]) and not np.array_equal(again, other)
    # A criterion changes which channels survive, never how many.
    plan = prune_plan(TINY.plan, tiny_groups, 0.5)
    kept = {name: select_channels(weights, tiny_groups, plan, name, evidence)
            for name in CRITERIA}
    assert all(len(k[group.name]) == plan[group.producers[0]] for k in kept.values())
    assert not np.array_equal(kept["l1"][group.name], kept["random"][group.name])
    with pytest.raises(OptionError, match="bn_scale needs the BN variant"):
        select_channels(fold_batch_norm(weights),
                        model_groups(TINY.replace(batch_norm=False)), plan, "bn_scale")
    with pytest.raises(ValueError, match="needs Taylor scores"):
        select_channels(weights, tiny_groups, plan, "taylor")


def test_taylor_scores_and_plan_cost_on_a_tiny_model():
    from deploy.pruning import PlanCost
    from deploy.taylor import taylor_scores
    from icnet.data import make_source
    weights = random_bn_weights(TINY, seed=2)
    source = make_source("synthetic", "train", synthetic_size=(192, 256), synthetic_count=4)
    scores = taylor_scores(TINY, weights, source, (161, 161), batch_size=2, batches=1)
    assert set(scores) == set(TINY.plan)
    for name, value in scores.items():
        assert value.shape == (TINY.plan[name],) and np.all(value >= 0), name
    assert sum(float(v.sum()) for v in scores.values()) > 0
    cost = PlanCost(TINY, (193, 257))

    def conv_flops(plan):  # counted on a model built with that plan
        model = build_icnet(TINY.replace(plan=plan, batch_norm=False), (193, 257))
        return sum(2 * int(np.prod(layer.output.shape[1:])) * layer.kernel_size[0]
                   * layer.kernel_size[1] * int(layer.input.shape[-1])
                   for layer in model.layers if isinstance(layer, tf_keras.layers.Conv2D))

    half = prune_plan(TINY.plan, model_groups(TINY), 0.5)
    assert cost.flops(TINY.plan) == conv_flops(TINY.plan)
    assert cost.flops(half) == conv_flops(half) < 0.35 * cost.flops(TINY.plan)
    profiled = model_profile(TINY.replace(batch_norm=False), (193, 257))["flops"]
    assert 0.8 * profiled < cost.flops(TINY.plan) <= profiled  # the convolutions' share


@pytest.mark.long
def test_sensitivity_and_a_plan_for_a_flop_budget(tmp_path):
    save_tiny_checkpoint(tmp_path / "src", TINY)
    out = tmp_path / "sens"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.sensitivity", "--model", str(tmp_path / "src"),
         "--output_dir", str(out), "--keeps", "0.5", "--eval_images", "1",
         "--input_size", "193x257", "--synthetic_size", "192x256", "--target_gflops", "0.02"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "sensitivity.json") as f:
        data = json.load(f)
    groups = model_groups(TINY)
    assert len(data["rows"]) == sum(kept_width(g.channels, 0.5) < g.channels for g in groups)
    assert all(row["gflops_saved"] > 0 and -1 <= row["drop"] <= 1 for row in data["rows"])
    plan = ICNetConfig.load(str(out / "plan.json")).plan
    assert data["target"]["plan_gflops"] <= 0.02
    from deploy.pruning import PlanCost, check_target_plan
    check_target_plan(TINY.plan, groups, plan)  # reachable by pruning
    assert PlanCost(TINY, (193, 257)).flops(plan) / 1e9 == pytest.approx(
        data["target"]["plan_gflops"])
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A budget below the narrowest allowed plan: one line naming the flag.
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.sensitivity", "--model", str(tmp_path / "src"),
         "--output_dir", str(tmp_path / "sens2"), "--keeps", "0.5", "--eval_images", "1",
         "--input_size", "193x257", "--synthetic_size", "192x256", "--target_gflops", "0.0001"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: --target_gflops: 0.0001: even the narrowest allowed plan (every group at keep "
        "0.5) costs")


@pytest.mark.long
def test_quick_pruning_study_runs_end_to_end_and_resumes(tmp_path):
    args = [sys.executable, "-m", "benchmarks.pruning_study", "--output_dir",
            str(tmp_path / "study"), "--work_dir", str(tmp_path / "work"), "--filter_scale",
            "0.125", "--scene_size", "192x256", "--input_size", "193x257", "--train_scenes", "8",
            "--val_scenes", "1", "--crop_size", "161x161", "--batch_size", "2",
            "--chunk_steps", "2", "--source_steps", "4", "--keeps", "0.5",
            "--criteria", "l1,random", "--noprogressive", "--threads", "1",
            "--budgets", "1000,0.001", "--round_to", "2"]
    # The targeted points are searched on a real latency table of the tiny model (int8
    # XNNPACK, 1 thread): its time is mostly overhead, the narrowest plan's within timing
    # noise of the source's, so the reachable budget is a loose one (1000 ms); 0.001 ms is
    # unreachable.
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    study = tmp_path / "study"
    points = sorted(p.stem for p in (study / "points").iterdir())
    assert points == ["control", "latency_0.5", "latency_1", "pruned_0.5_l1",
                      "pruned_0.5_random", "scratch_0.5", "setup", "source",
                      "targeted_0.001ms", "targeted_1000ms"]
    with open(study / "results.json") as f:
        results = json.load(f)
    source = next(p for p in results["points"] if p["kind"] == "source")
    assert source["steps"] == 4 and [c["step"] for c in source["curve"]] == [2, 4]
    # The plateau rule checked on the whole schedule's curve: steps 2 to 4, with the change's
    # interval over the val scenes, in the point and in STUDY.md.
    change = source["last_fifth"]
    assert change["from_step"] == 2 and change["interval"][0] <= change["interval"][1]
    assert source["plateau_met"] == (abs(change["gain"]) < 0.5)
    control = next(p for p in results["points"] if p["kind"] == "control")
    assert control["steps"] == 1  # a tenth of the source's steps, at least one
    text = (study / "STUDY.md").read_text()
    assert f"{change['gain']:+.2f} points [" in text and "from step 2 to 4" in text
    assert "| 0.5 | l1 | one shot |" in text and "| 0.5 | random | one shot |" in text
    assert "vs equal-budget control" in text and "![mIoU against int8 latency](pareto.png)" in text
    # The latencies say where they were measured.
    assert f"1 threads, median of 5, on {timing_cpu()}." in text
    assert "- keep 0.5, l1: " in text and "points lost against the equal-budget control" in text
    # Every difference with its paired bootstrap interval over the val scenes, whose per-scene
    # matrices the points keep (results.json leaves them out).
    assert re.search(r"\| 0\.5 \| l1 \| one shot \|.* pt \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] \|",
                     text), text
    l1_point = json.loads((study / "points" / "pruned_0.5_l1.json").read_text())
    assert np.array(l1_point["per_image_confusion"]).shape == (1, 19, 19)
    assert not any("per_image_confusion" in p for p in results["points"])
    assert all(p["seconds"] > 0 for p in results["points"]), results["points"]
    loose, unreachable = results["targeted"]
    assert loose["status"] == "ok" and loose["target_ms"] == 1000.0
    assert loose["steps"] == 1 and loose["final_ms"] > 0 and loose["median_s"] > 0
    assert 1 <= len(loose["rounds"]) <= 4
    assert unreachable["status"] == "unreachable" and "0.001 ms is unreachable" in \
        unreachable["message"]
    assert "## Latency budgets" in text and "| 0.001 | 0.0 ms | unreachable: " in text
    assert f"| 1000 | 1000.0 ms | {loose['params']:,} |" in text
    for name in ("pareto.png", "source_curve.png"):
        assert (study / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A rerun redoes only the missing points. The source's curve is kept in its model
    # directory, so a source whose training finished is not trained again. A budget searched
    # down to another --min_keep, or its cuts scored by the measured layer sensitivity, is
    # another point; the sensitivity is measured on training scenes and kept for every budget.
    (study / "points" / "pruned_0.5_random.json").unlink()
    source_point = json.loads((study / "points" / "source.json").read_text())
    (study / "points" / "source.json").unlink()
    again = subprocess.run(args + ["--budgets", "0.001,1000", "--min_keep", "0.5",
                                   "--search_images", "1"], cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    done = [line for line in again.stderr.splitlines() if "study: point" in line]
    assert len(done) == 4 and "source" in done[0] and "pruned_0.5_random" in done[1]
    assert "targeted_0.001ms_min0.5_s1" in done[2] and "targeted_1000ms_min0.5_s1" in done[3]
    text = (study / "STUDY.md").read_text()
    assert ("| 0.001 (min keep 0.5; sensitivity on 1 training scenes) | 0.0 ms | unreachable: "
            in text and "| 1000 | 1000.0 ms" not in text)
    assert "(every group at --min_keep 0.5) runs in " in text
    kept = json.loads((tmp_path / "work" / "sensitivity_min0.5_s1.json").read_text())
    assert kept["key"] == {"criterion": "l1", "keeps": [0.75, 0.5], "images": 1,
                           "input_size": [193, 257]}
    groups = model_groups(ICNetConfig.from_filter_scale(0.125, 19))
    assert len(kept["rows"]) == sum(kept_width(g.channels, k) < g.channels
                                    for g in groups for k in (0.75, 0.5))
    assert all(0 <= row["miou"] <= 1 for row in kept["rows"])
    assert "study: source at step" not in again.stderr
    again_point = json.loads((study / "points" / "source.json").read_text())
    assert {**again_point, "seconds": 0} == {**source_point, "seconds": 0}
    # Other settings into the same study are refused: its points would mix two setups.
    other = [a if a != "2" or args[i - 1] != "--batch_size" else "4" for i, a in enumerate(args)]
    refused = subprocess.run(other, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "other settings (batch_size: 2)" in refused.stderr.strip().splitlines()[-1]
    # So is a new output with the old work directory: its models are of the other setup.
    elsewhere = [str(tmp_path / "other") if a == str(study) else a for a in other]
    refused = subprocess.run(elsewhere, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith("or use a new --work_dir")
    assert not (tmp_path / "other").exists()
    # On a fresh machine (the source's model gone) with fewer points selected (no budgets),
    # the points that do not start from the source are redone: the from-scratch control.
    shutil.rmtree(tmp_path / "work" / "source")
    (study / "points" / "scratch_0.5.json").unlink()
    fresh = [a if args[i - 1] != "--budgets" else "" for i, a in enumerate(args)]
    again = subprocess.run(fresh, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    done = [line for line in again.stderr.splitlines() if "study: point" in line]
    assert len(done) == 1 and "scratch_0.5" in done[0]
    assert "## Latency budgets" not in (study / "STUDY.md").read_text()
    # A missing point pruned from the source is refused: it would come from another source.
    (study / "points" / "pruned_0.5_random.json").unlink()
    gone = subprocess.run(fresh, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    assert "holds no checkpoint of it" in gone.stderr.strip().splitlines()[-1]


def test_the_study_says_when_its_source_is_not_trained(tmp_path):
    from benchmarks.pruning_study_lib import (Study, StudyOptions, last_fifth, plateaued,
                                              study_markdown, validity)

    def source_of(curve):
        change = last_fifth(curve)
        return {"kind": "source", "keep": 1.0, "steps": curve[-1]["step"],
                "miou": curve[-1]["miou"], "curve": curve, "last_fifth": change,
                "plateau_met": plateaued(change, 0.5), "params": 1, "gflops": 1.0,
                "criterion": None, "schedule": None}

    flat = [{"step": s, "miou": 0.2} for s in (100, 200, 300, 400, 500)]
    control = {"kind": "control", "keep": 1.0, "miou": 0.117}
    scratch = [{"kind": "scratch", "keep": k, "miou": m} for k, m in ((0.5, 0.228), (0.25, 0.1))]
    # A narrower plan from scratch beating the control: under a plateaued source the width
    # buys nothing (the drops still measure pruning against the trained source); without a
    # plateau the source is under-trained.
    warning = validity([source_of(flat), control, *scratch], 0.5)
    assert len(warning) == 2 and warning[0].startswith("**The width buys nothing at this budget")
    assert ("22.80%, above the full-width control's 11.70% (+11.10 pt; 1 of the scratch plans"
            in warning[0])
    assert validity([source_of(flat), control, {**scratch[0], "miou": 0.11}], 0.5) == []
    unstable = validity([source_of([*flat[:4], {"step": 500, "miou": 0.15}]), control,
                         *scratch], 0.5)
    assert len(unstable) == 4 and unstable[2].startswith("**Not evidence of what pruning costs")
    # The rule: the change from the latest evaluation at or before 80% of the steps to the
    # last, less than 0.5 point either way. A rise is no plateau, nor is a fall.
    assert last_fifth(flat) == {"from_step": 400, "gain": 0.0}
    assert plateaued(last_fifth(flat), 0.5) and not plateaued(last_fifth(flat[:1]), 0.5)
    rising = [*flat[:4], {"step": 500, "miou": 0.21}]
    falling = [*flat[:4], {"step": 500, "miou": 0.15}]
    assert last_fifth(rising)["gain"] == pytest.approx(1.0)
    assert not plateaued(last_fifth(rising), 0.5) and not plateaued(last_fifth(falling), 0.5)
    warning = validity([source_of(falling), control], 0.5)
    assert warning[0].startswith("**Not evidence: the source did not plateau**: its val mIoU "
                                 "fell 5.00 points over the last fifth of training")
    # With per-scene matrices, the change carries its paired interval, and STUDY.md states it.
    matrices = np.zeros((3, 19, 19))
    matrices[:, 0, 0], matrices[:, 1, 1], matrices[:, 0, 1] = 90, 80, 10
    better = matrices.copy()
    better[:, 0, 1], better[:, 0, 0] = 5, 95
    change = last_fifth([{"step": 400, "miou": 0.8, "per_image_confusion": matrices.tolist()},
                         {"step": 500, "miou": 0.85, "per_image_confusion": better.tolist()}])
    low, high = change["interval"]
    assert 0 < low <= high  # the same improvement on every scene
    options = dataclasses.asdict(StudyOptions(output_dir="", work_dir=""))
    rose = source_of(rising)
    rose["last_fifth"]["interval"] = [0.4, 1.6]
    text_points = [rose, {**control, "steps": 50, "params": 1, "gflops": 1.0,
                          "criterion": None, "schedule": None}]
    text = study_markdown({"points": text_points, "latency": {}, "targeted": [],
                           "options": options}, (2, 60))
    assert ("less than 0.5 point either way over the last fifth of training: NOT met, +1.00 "
            "points [+0.40, +1.60] from step 400 to 500") in text
    assert "**Not evidence: the source did not plateau**: its val mIoU rose 1.00" in text
    assert "the run that wrote this report made 2 of its 2 points in 1.0 min" in text
    assert "(not evidence, see above)" in text
    text = study_markdown({"points": [source_of(flat), *text_points[1:]],
                           "latency": {}, "targeted": [], "options": options}, (2, 60))
    assert ": met, +0.00 points from step 400 to 500" in text and "Not evidence" not in text
    beaten = {**scratch[0], "steps": 550, "params": 1, "gflops": 1.0, "criterion": None,
              "schedule": None}
    text = study_markdown({"points": [source_of(flat), *text_points[1:], beaten],
                           "latency": {}, "targeted": [], "options": options}, (2, 60))
    assert "The width buys nothing at this budget" in text and "not evidence" not in text
    with pytest.raises(ValueError, match="chunk_steps must be at most 80% of source_steps"):
        StudyOptions(output_dir="", work_dir="", chunk_steps=100, source_steps=110)
    with pytest.raises(ValueError, match="plateau_points must be > 0, got 0"):
        StudyOptions(output_dir="", work_dir="", plateau_points=0)
    with pytest.raises(ValueError, match="search_images must be >= 0, got -1"):
        StudyOptions(output_dir="", work_dir="", search_images=-1)
    # A study recorded by the earlier version (its source stopped early) cannot be continued.
    old = tmp_path / "old" / "points"
    old.mkdir(parents=True)
    (old / "setup.json").write_text(json.dumps({"max_steps": 600, "min_chunks": 3}))
    with pytest.raises(OptionError, match="made by an earlier version .its max_steps, "
                                          "min_chunks: the source stopped early"):
        Study(StudyOptions(output_dir=str(tmp_path / "old"), work_dir=str(tmp_path / "w")))
