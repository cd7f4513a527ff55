"""Pruning to a budget: the latency table, the search, deploy.prune --target_latency_ms and
--target_gflops (quick mode: the tiny model at 193x257), and their bad inputs."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import conftest
from conftest import REPO
from deploy import budget
from deploy.latency_table import Target, grid_widths, measure_model, time_conv
from deploy.pruning import PlanCost, check_target_plan, model_groups
from deploy.report import ExportReport, PruneReport
from deploy.sensitivity import Row
from icnet.checkpoint import load_checkpoint_weights
from icnet.exits import OptionError
from test_prune import TINY, save_tiny_checkpoint

SIZE = (193, 257)
DATA = ["--input_size", "193x257", "--synthetic_size", "192x256", "--synthetic_count", "4",
        "--search_images", "0", "--min_keep", "0.5", "--round_to", "2"]


def flop_table(source: str, target: Target, source_seconds: float = 0.010,
               min_keep: float = 0.5, round_to: int = 2,
               narrowest_seconds: float | None = None) -> str:
    """conftest.flop_table for the tiny model."""
    return conftest.flop_table(source, target, TINY, source_seconds, min_keep, round_to,
                               narrowest_seconds)


def prune(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "deploy.prune", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_grid_and_search_meet_a_flop_budget():
    assert grid_widths(64, 0.25, 1) == [16, 32, 48, 64]
    assert grid_widths(64, 0.3, 8) == [24, 32, 48, 64]  # 0.3 * 64 = 19.2 -> 24
    groups = model_groups(TINY)
    cost = PlanCost(TINY, SIZE)
    full = cost.flops(TINY.plan) / 1e9
    # conv5's groups lose nothing when cut, every other group a lot: the search cuts conv5.
    rows = [Row(g.name, g.channels, 0.5, grid_widths(g.channels, 0.5, 1)[0],
                0.0, 0.0 if g.name.startswith("conv5") else 0.5, 0.0) for g in groups]
    plan, steps = budget.search(TINY.plan, groups, rows, lambda p: cost.flops(p) / 1e9,
                                0.97 * full, 0.5)
    check_target_plan(TINY.plan, groups, plan)
    assert cost.flops(plan) / 1e9 <= 0.97 * full and steps
    assert {step.group[:5] for step in steps} == {"conv5"}
    assert [s.cost for s in steps] == sorted((s.cost for s in steps), reverse=True)
    with pytest.raises(ValueError, match="narrowest allowed plan .* keep 0.5"):
        budget.search(TINY.plan, groups, rows, lambda p: cost.flops(p) / 1e9, 0.01 * full, 0.5)


def _flop_rows(groups):
    """Every group loses mIoU in proportion to the width cut (conv5's ten times less)."""
    return [Row(g.name, g.channels, keep, grid_widths(g.channels, keep, 1)[0], 0.0,
                (0.05 if g.name.startswith("conv5") else 0.5) * (1 - keep), 0.0)
            for g in groups for keep in (0.5, 0.75)]


def test_grow_widens_back_within_the_budget():
    groups = model_groups(TINY)
    rows = _flop_rows(groups)
    cost = PlanCost(TINY, SIZE)
    full = cost.flops(TINY.plan) / 1e9
    gflops = lambda p: cost.flops(p) / 1e9  # noqa: E731
    narrow, _ = budget.search(TINY.plan, groups, rows, gflops, 0.6 * full, 0.5)
    wider, steps = budget.grow(narrow, groups, rows, gflops, 0.8 * full)
    check_target_plan(TINY.plan, groups, wider)
    assert gflops(narrow) <= 0.6 * full < gflops(wider) <= 0.8 * full and steps
    assert all(narrow[n] <= wider[n] <= TINY.plan[n] for n in TINY.plan)
    assert [s.cost for s in steps] == sorted(s.cost for s in steps)
    assert all(s.loss <= 0 for s in steps)  # a widening recovers
    # The costliest-to-cut groups come back first: no conv5 widening before the others.
    first_conv5 = next((i for i, s in enumerate(steps) if s.group.startswith("conv5")),
                       len(steps))
    assert all(not s.group.startswith("conv5") for s in steps[:first_conv5])
    assert first_conv5 > 0
    # Room for everything: the source's widths.
    assert budget.grow(narrow, groups, rows, gflops, full)[0] == dict(TINY.plan)


@pytest.mark.parametrize("speed, kinds", [(0.8, ["cut", "grow"]), (1.25, ["cut", "cut"])])
def test_fit_reanchors_to_the_measurement_and_cuts_or_grows(speed, kinds):
    """The estimate is the FLOPs; the "measurement" is `speed` times them: a plan measured
    well under the budget is widened back, one over it is cut further, each after the
    estimate is re-anchored to the measurement."""
    groups = model_groups(TINY)
    rows = _flop_rows(groups)
    flops = PlanCost(TINY, SIZE)
    full = flops.flops(TINY.plan) / 1e9
    scale = [1.0]
    fitted = budget.fit(TINY.plan, groups, rows,
                        cost=lambda p: scale[0] * flops.flops(p) / 1e9,
                        anchor=lambda p, m: scale.__setitem__(0, m / (flops.flops(p) / 1e9)),
                        measure=lambda p: speed * flops.flops(p) / 1e9, budget=0.7 * full,
                        min_keep=0.25)
    assert [r["kind"] for r in fitted.rounds] == kinds
    assert fitted.rounds[0]["estimate"] <= 0.7 * full
    assert 0.7 * full * (1 - budget.UNDER) <= fitted.measured <= 0.7 * full
    assert fitted.measured == fitted.rounds[-1]["measured"] == speed * flops.flops(
        fitted.plan) / 1e9
    check_target_plan(TINY.plan, groups, fitted.plan)


def test_one_convolution_is_timed_in_each_quantization():
    target = Target("tflite_xnnpack", "int8", 1, SIZE)
    spec = {"input_hw": [49, 65], "kernel": 3, "stride": 1, "dilation": 1, "padding": "same"}
    for quantization in ("int8", "fp32"):
        target = Target("tflite_xnnpack", quantization, 1, SIZE)
        assert 0 < time_conv(spec, 8, 16, target, target.check(), 1, 2) < 1.0


def test_the_estimate_is_linear_between_the_measured_models(tmp_path):
    # Anchored to the source alone, an estimate is proportional to the table's sum; anchored
    # to the narrowest plan too, it is linear between them: the fixed cost (input conversion,
    # resizes) a proportional correction misses.
    from deploy.latency_table import LatencyTable
    from deploy.pruning import prune_plan

    target = Target("tflite_xnnpack", "int8", 2, SIZE)
    table = LatencyTable(flop_table(str(tmp_path / "src"), target), target, TINY, 0.5, 2)
    groups = model_groups(TINY)
    narrow = budget.narrowest_plan(TINY.plan, groups, 0.5, 2)
    between = prune_plan(TINY.plan, groups, 0.75, 2)
    full, middle, low = (table.conv_seconds(plan) for plan in (TINY.plan, between, narrow))
    assert full > middle > low > 0
    table.calibrate(TINY.plan, 0.010)
    assert table.estimate(between) == pytest.approx(0.010 * middle / full)
    table.calibrate(narrow, 0.004)
    assert table.estimate(TINY.plan) == pytest.approx(0.010)
    assert table.estimate(narrow) == pytest.approx(0.004)
    assert table.estimate(between) == pytest.approx(
        0.004 + (middle - low) / (full - low) * 0.006)
    # Measurements that fall as the sums rise (timing noise): proportional to the nearest.
    table.calibrate(narrow, 0.020)
    assert table.estimate(narrow) == pytest.approx(0.020)
    assert table.estimate(TINY.plan) == pytest.approx(0.010)


def measured_source_ms(source, target: Target) -> float:
    """The tiny source's real latency on `target` (what the search's rounds measure against)."""
    return 1e3 * measure_model(*load_checkpoint_weights(str(source)), target)


def test_prune_to_a_latency_target(tmp_path):
    source = tmp_path / "src"
    save_tiny_checkpoint(source, TINY)
    target = Target("tflite_xnnpack", "fp32", 2, SIZE)
    source_ms = measured_source_ms(source, target)
    # The source's measurement is kept in the table, whose entries are proportional to the
    # FLOPs, and so is the narrowest plan's (a tiny model's real one runs in about 65% of the
    # source's, within timing noise of the goal): the search cuts to 60% of the source's
    # time, measures, and cuts further or widens back (the real model is not proportional to
    # its FLOPs).
    table_path = flop_table(str(source), target, source_seconds=source_ms / 1e3)
    goal = round(0.6 * source_ms, 3)
    result = prune("--model", str(source), "--output_dir", str(tmp_path / "fast"),
                   "--target_latency_ms", str(goal), "--target_quantization", "fp32", *DATA)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "timing" not in result.stderr  # the table was reused, not measured again
    report = PruneReport.read(str(tmp_path / "fast"))
    found = report.budget
    assert found.latency_ms == goal and found.source_ms == pytest.approx(source_ms)
    assert found.runtime == "tflite_xnnpack" and found.table == table_path
    assert found.steps and 1 <= len(found.rounds) <= budget.FIT_ROUNDS
    assert found.rounds[0]["kind"] == "cut" and found.rounds[0]["estimate"] <= goal
    assert found.measured_ms in [r["measured"] for r in found.rounds] and 0 < found.final_ms
    assert json.loads(result.stdout.strip().splitlines()[-1])["latency_ms"] == found.final_ms
    # Widths are multiples of --round_to 2 (or the group's full width), no narrower than
    # --min_keep 0.5.
    groups = model_groups(TINY)
    check_target_plan(TINY.plan, groups, report.final.plan)
    for group in groups:
        width = report.final.plan[group.producers[0]]
        assert width == group.channels or (width % 2 == 0 and width >= group.channels / 2)
    # The fit rule on the recorded rounds (timings of a tiny model under parallel tests are
    # noisy, so any round may land in the band, including a plan widened back to full width):
    # the kept measurement fits the target when one does, else it is the last round's.
    limit = goal * (1 + budget.OVER)
    last = found.rounds[-1]["measured"]
    if any(r["measured"] <= limit for r in found.rounds):
        assert found.measured_ms <= limit
    else:
        assert found.measured_ms == last
    assert PlanCost(TINY, SIZE).flops(report.final.plan) <= PlanCost(TINY, SIZE).flops(TINY.plan)


def test_export_prunes_to_a_latency_target_and_times_the_artifact(tmp_path):
    """deploy.export --prune --target_latency_ms: the default target (int8 TFLite XNNPACK at
    2 threads), the search, and the exported int8 artifact timed, in both reports."""
    source = tmp_path / "src"
    save_tiny_checkpoint(source, TINY)
    target = Target("tflite_xnnpack", "int8", 2, SIZE)
    source_ms = measured_source_ms(source, target)
    # export's --min_keep is the default 0.25; --round_to 2 keeps every width >= 2 (a tiny
    # random model's 1-channel int8 convs fail XNNPACK's prepare).
    flop_table(str(source), target, source_seconds=source_ms / 1e3, min_keep=0.25,
               round_to=2)
    goal = round(0.6 * source_ms, 3)
    result = subprocess.run(
        [sys.executable, "-m", "deploy.export", "--model", str(source), "--export_dir",
         str(tmp_path / "export"), "--prune", "--target_latency_ms", str(goal), "--formats",
         "tflite", "--quantize", "fp32,int8", "--noexport_unpruned", "--parity_images", "1",
         "--eval_images", "0", "--calibration_images", "2", "--gpu_check", "none",
         "--input_size", "193x257", "--synthetic_size", "192x256", "--search_images", "0",
         "--round_to", "2", "--nofloors"],  # a tiny random model's int8 is below the floors
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = ExportReport.read(str(tmp_path / "export"))
    found = report.prune.budget
    assert (found.latency_ms, found.runtime, found.quantization, found.threads) == \
        (goal, "tflite_xnnpack", "int8", 2)
    assert found.steps and found.rounds[0]["estimate"] <= goal and 0 < found.exported_ms
    assert "budget: timing tflite/icnet_int8.tflite on" in result.stderr
    markdown = (tmp_path / "export" / "export_report.md").read_text()
    assert f"Budget: {goal:g} ms on tflite_xnnpack int8 at 2 threads" in markdown
    assert f"on the exported artifact {found.exported_ms:.1f} ms" in markdown


def test_bad_budgets_are_named_and_write_nothing(tmp_path, monkeypatch):
    source = tmp_path / "src"
    save_tiny_checkpoint(source, TINY)
    table_path = flop_table(str(source), Target("tflite_xnnpack", "int8", 2, SIZE),
                            narrowest_seconds=0.003)
    # 10 ms for the source: the narrowest plan is estimated at about a quarter of it, and
    # measured (as the table holds it) at 3 ms.
    cases = {
        ("--target_latency_ms", "1"): "error: --target_latency_ms: 1 ms is unreachable:"
                                          " the narrowest allowed plan (every group at "
                                          "--min_keep 0.5) runs in 3 ms (estimated 2.",
        ("--target_latency_ms", "5", "--target_runtime", "tflite_turbo"):
            "error: --target_runtime: unknown runtime 'tflite_turbo'; choose from",
        ("--target_latency_ms", "5", "--target_runtime", "onnxruntime_cpu"):
            "error: --target_runtime: onnxruntime_cpu runs onnx files; latency tables are "
            "measured on the TFLite runtimes",
        ("--target_latency_ms", "5", "--target_gflops", "1"):
            "error: --target_latency_ms: give a latency budget or --target_gflops, not both",
        ("--target_gflops", "1", "--keep", "0.5"):
            "error: --keep: a budget (--target_latency_ms, --target_gflops) chooses the widths",
    }
    for args, message in cases.items():
        result = prune("--model", str(source), "--output_dir", str(tmp_path / "out"), *args,
                       *DATA)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-500:]
        assert sorted(os.listdir(tmp_path)) == ["src"]  # no output, no staging, no work dir
    # A table of another machine: named with the setting that differs.
    with open(table_path) as f:
        data = json.load(f)
    data["settings"]["cpu"] = "Some Other CPU"
    with open(table_path, "w") as f:
        json.dump(data, f)
    result = prune("--model", str(source), "--output_dir", str(tmp_path / "out"),
                   "--target_latency_ms", "5", *DATA)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --latency_table: {table_path} was measured with cpu 'Some Other CPU', not "
        f"{Target().settings()['cpu']!r} (another machine or size): delete it or pass another "
        f"--latency_table")
    assert sorted(os.listdir(tmp_path)) == ["src"]
    # A runtime this machine cannot run: fp16 XNNPACK on a CPU without native fp16.
    from icnet import cpu
    monkeypatch.setattr(cpu, "has_fp16", lambda: False)
    with pytest.raises(OptionError, match="tflite_xnnpack_fp16 is not available on this "
                                          "machine: this CPU has no native fp16"):
        Target("tflite_xnnpack_fp16", "fp32", 2, SIZE).check()


def test_a_budget_the_estimate_misses_is_judged_by_measuring_the_narrowest_plan(tmp_path):
    # The estimate puts the narrowest plan at about 2.5 ms; measured (as the table holds it)
    # it runs in 1 ms: a 2 ms budget is reachable, and the estimate is re-anchored to it.
    from deploy.prune_lib import Budget, PruneOptions, _cost

    source = tmp_path / "src"
    save_tiny_checkpoint(source, TINY)
    target = Target("tflite_xnnpack", "int8", 2, SIZE)
    flop_table(str(source), target, narrowest_seconds=0.001)
    config, weights = load_checkpoint_weights(str(source))
    options = PruneOptions(schedule=(1.0,), round_to=2, input_size=SIZE,
                           budget=Budget(latency_ms=2.0, target=target, min_keep=0.5,
                                         search_images=0))
    cost, goal, _, source_ms = _cost(str(source), config, weights, options)
    narrowest = budget.narrowest_plan(config.plan, model_groups(config), 0.5, 2)
    assert (goal, source_ms) == (2.0, 10.0)
    assert cost(narrowest) == pytest.approx(1.0) and cost(config.plan) > 2.0


def test_a_measured_sensitivity_is_reused_only_for_the_same_measurement(tmp_path):
    # A sensitivity file measured for this criterion, keeps, images and size is read, not
    # measured again; for other images it is measured (from the eval source, here one that
    # refuses to be read).
    from deploy.prune_lib import Budget, PruneOptions, _sensitivity
    from deploy.pruning import Evidence

    source = tmp_path / "src"
    save_tiny_checkpoint(source, TINY)
    config, weights = load_checkpoint_weights(str(source))
    path = tmp_path / "sensitivity.json"
    row = Row("conv5_3", 64, 0.5, 32, 0.25, 0.125, 0.0)
    key = {"criterion": "l1", "keeps": [0.75, 0.5], "images": 2, "input_size": list(SIZE)}
    path.write_text(json.dumps({"key": key, "rows": [dataclasses.asdict(row)]}))

    class Unread:
        def __getattr__(self, name):
            raise LookupError(f"the eval source was read ({name})")

        def __len__(self):
            raise LookupError("the eval source was read (len)")

    def options(images):
        return PruneOptions(schedule=(1.0,), round_to=2, input_size=SIZE,
                            budget=Budget(gflops=1.0, min_keep=0.5, search_images=images,
                                          sensitivity_file=str(path)))

    assert _sensitivity(config, weights, options(2), Evidence(), Unread(),
                        str(tmp_path)) == [row]
    with pytest.raises(LookupError, match="the eval source was read"):
        _sensitivity(config, weights, options(1), Evidence(), Unread(), str(tmp_path))
