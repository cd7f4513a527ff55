"""benchmarks.latency and benchmarks.report on one tiny export (1/8 width, 193x257).

The export (SavedModel, ONNX, TFLite fp32 and int8) is made once; the latency binary runs as a
subprocess with 1 thread, 1 warm-up and 2 timed calls. Acceptance ratios of a pruned export
are checked on hand-made results (no second export).
"""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tf_keras
from conftest import REPO
from PIL import Image

from benchmarks import latency as latency_lib
from benchmarks import report as report_lib
from benchmarks.conv_latency import output_groups
from benchmarks.runtimes import RUNTIMES
from deploy import report as export_lib
from deploy.export import ExportOptions, export
from deploy.quantize import QUANTIZATIONS
from icnet.checkpoint import select_plan
from icnet.config import ICNetConfig
from icnet.data import make_source
from icnet.model import build_icnet
from icnet.weights import model_weights, save_npy_weights

SIZE = (193, 257)
ARTIFACTS = ("saved_model/icnet/1", "onnx/icnet.onnx", "tflite/icnet_fp32.tflite",
             "tflite/icnet_int8.tflite")
CPU_RUNTIMES = {"saved_model": ("tf_cpu",), "onnx": ("onnxruntime_cpu",),
                "tflite": ("tflite_xnnpack", "tflite_reference")}
GPU_RUNTIMES = {"saved_model": ("tf_gpu",), "onnx": ("onnxruntime_cuda",),
                "tflite": ("tflite_gpu",)}
FAST = ["--runs", "2", "--warmup", "1", "--threads", "1"]


def run_module(module, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    tf_keras.utils.set_random_seed(0)
    config = ICNetConfig.from_filter_scale(0.125, 19, batch_norm=True)
    weights = str(tmp_path_factory.mktemp("weights") / "tiny_bn.npy")
    save_npy_weights(model_weights(build_icnet(config, (161, 161))), weights)
    directory = str(tmp_path_factory.mktemp("export"))
    options = ExportOptions(directory, input_size=SIZE, formats=("saved_model", "tflite", "onnx"),
                            quantizations=("fp32", "int8"), parity_images=1, eval_images=2,
                            calibration_images=4, gpu_check=False)
    export(weights, options, make_source("synthetic", "train", synthetic_size=SIZE),
           make_source("synthetic", "val", synthetic_size=SIZE))
    return directory


@pytest.fixture(scope="module")
def latency_json(export_dir, tmp_path_factory):
    """Every runtime family (tflite_reference included) at 1 thread."""
    path = str(tmp_path_factory.mktemp("latency") / "latency.json")
    done = run_module("benchmarks.latency", "--export_dir", export_dir, "--json", path, *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "case 1/" in done.stderr
    with open(path) as f:
        return path, json.load(f)


def by_case(data):
    return {(r["artifact"], r["runtime"], r["threads"]): r for r in data["results"]}


def test_latency_measures_every_artifact_and_runtime(latency_json):
    _, data = latency_json
    assert data["complete"] is True
    machine = data["machine"]
    assert machine["logical_cores"] >= 1 and machine["cpu_model"]
    assert isinstance(machine["isa_flags"], list) and isinstance(machine["gpus"], list)
    assert machine["versions"]["tensorflow"] and machine["versions"]["onnxruntime"]
    assert data["settings"]["threads"] == [1] and data["settings"]["runs"] == 2
    results = by_case(data)
    for artifact in ARTIFACTS:
        fmt = artifact.split("/")[0]
        for runtime in CPU_RUNTIMES[fmt]:
            r = results[(artifact, runtime, 1)]
            assert r["status"] == "ok", r
            assert r["format"] == fmt and r["model"] == "icnet"
            assert r["quantization"] == ("int8" if "int8" in artifact else "fp32")
            assert 0 < r["median_s"] <= r["p90_s"]
            assert r["fps"] == pytest.approx(1 / r["median_s"])
            assert r["peak_rss_bytes"] > 2**20 and r["size_bytes"] > 0
            assert r["input_size"] == list(SIZE) and len(r["times_s"]) == 2
        for runtime in GPU_RUNTIMES[fmt]:
            r = results[(artifact, runtime, None)]
            if machine["gpus"]:
                assert r["status"] in ("ok", "unavailable", "failed")
            else:  # this machine: no GPU, every GPU runtime says why it cannot run
                assert r["status"] == "unavailable", r
                assert r["reason"] and r["median_s"] is None
    assert len(data["results"]) == sum(len(CPU_RUNTIMES[a.split("/")[0]])
                                       + len(GPU_RUNTIMES[a.split("/")[0]]) for a in ARTIFACTS)
    # A TFLite SavedModel-free worker does not import TensorFlow: its peak is far smaller.
    assert results[("tflite/icnet_int8.tflite", "tflite_xnnpack", 1)]["peak_rss_bytes"] < \
        results[("saved_model/icnet/1", "tf_cpu", 1)]["peak_rss_bytes"]


def test_corrupt_tflite_fails_alone(export_dir, tmp_path):
    copy = str(tmp_path / "export")
    os.makedirs(os.path.join(copy, "tflite"))
    for name in ("icnet_fp32.tflite", "icnet_int8.tflite"):
        shutil.copy(os.path.join(export_dir, "tflite", name), os.path.join(copy, "tflite"))
    shutil.copy(os.path.join(export_dir, "export_report.json"), copy)
    with open(os.path.join(copy, "tflite", "garbage.tflite"), "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    path = str(tmp_path / "latency.json")
    done = run_module("benchmarks.latency", "--export_dir", copy, "--json", path,
                      "--runtimes", "tflite_xnnpack,tflite_gpu", "--rounds", "2", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(path) as f:
        results = by_case(json.load(f))
    for runtime, threads in (("tflite_xnnpack", 1), ("tflite_gpu", None)):
        bad = results[("tflite/garbage.tflite", runtime, threads)]
        assert bad["status"] == "failed" and bad["error"], bad
        assert bad["model"] is None and bad["median_s"] is None
    for name in ("icnet_fp32", "icnet_int8"):
        good = results[(f"tflite/{name}.tflite", "tflite_xnnpack", 1)]
        assert good["status"] == "ok"
        # Two rounds of two timed calls; the median is over all four.
        assert len(good["times_s"]) == 4 and len(good["round_medians_s"]) == 2
        assert good["median_s"] == pytest.approx(float(np.median(good["times_s"])))
    second_round = [line for line in done.stderr.splitlines() if "round 2/2, case" in line]
    assert len(second_round) == 2 and not any("garbage" in line for line in second_round)


def test_rounds_merge_into_one_result():
    first = {"status": "ok", "median_s": 1.0, "times_s": [1.0, 1.0], "peak_rss_bytes": 5,
             "load_s": 0.3, "wall_s": 2.0}
    second = {"status": "ok", "median_s": 3.0, "times_s": [3.0, 3.0, 3.0],
              "peak_rss_bytes": 9, "load_s": 0.1, "wall_s": 4.0}
    merged = latency_lib.merge_rounds([first, second])
    assert merged["median_s"] == 3.0 and merged["min_s"] == 1.0
    assert merged["round_medians_s"] == [1.0, 3.0] and len(merged["times_s"]) == 5
    assert merged["peak_rss_bytes"] == 9 and merged["wall_s"] == 6.0
    assert merged["load_s"] == 0.3  # the cold start of the first round
    crashed = {"status": "failed", "error": "worker exit code 1"}
    assert latency_lib.merge_rounds([first, crashed]) == {**crashed, "rounds_ok": 1}
    assert latency_lib.merge_rounds([first]) is first


def test_crash_and_timeout_become_failed(tmp_path):
    out = str(tmp_path / "never_written.json")
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    result = latency_lib.run_worker(crash, out, None, 60)
    assert result["status"] == "failed" and "SIGSEGV" in result["error"]
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    result = latency_lib.run_worker(hang, out, None, 0.5)
    assert result == {"status": "failed", "error": "timed out after 0.5 s",
                      "wall_s": pytest.approx(0.5, abs=5)}


def test_report_binary(export_dir, latency_json, tmp_path):
    path, data = latency_json
    out = str(tmp_path / "reports")
    done = run_module("benchmarks.report", "--export_dir", export_dir, "--latency", path,
                      "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, "REPORT.md")) as f:
        text = f.read()
    assert "## Machine" in text and data["machine"]["cpu_model"] in text
    assert "- GPU: none" in text or data["machine"]["gpus"]
    assert "input size: 193x257" in text
    assert "## Acceptance ratios (2 threads)" in text and "<= 1.15" in text
    assert "n/a (the export has no pruned model)" in text
    assert "## Reference numbers" in text and "0.518 s" in text and "67.26%" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(data["results"])
    for result in data["results"]:
        assert any(f"`{result['artifact']}`" in row and f"| {result['runtime']} |" in row
                   and f"| {result['status']} |" in row for row in rows), result
    baseline = [row for row in rows if "(baseline)" in row]
    assert len(baseline) == 1
    assert "`saved_model/icnet/1`" in baseline[0] and "| tf_cpu | 1 |" in baseline[0]
    assert "| 1.00x (baseline) |" in baseline[0]
    unavailable = [row for row in rows if "| unavailable |" in row]
    assert all("n/a" in row for row in unavailable)
    for name in (report_lib.MIOU_PLOT, report_lib.SIZE_PLOT):
        assert f"]({name})" in text
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        with Image.open(os.path.join(out, name)) as image:
            image.verify()
    assert not [n for n in os.listdir(out) if n.startswith(".")]


def fake(artifact, model, fmt, quantization, runtime, threads, median):
    return {"artifact": artifact, "model": model, "format": fmt, "quantization": quantization,
            "runtime": runtime, "threads": threads, "status": "ok", "median_s": median,
            "p90_s": median * 1.1, "fps": 1 / median, "peak_rss_bytes": 2**27,
            "size_bytes": 2**20}


def pruned_export_results():
    """A pruned export at 2 threads: icnet (pruned) beside icnet_unpruned."""
    rows = []
    for model, scale in (("icnet", 0.3), ("icnet_unpruned", 1.0)):
        rows += [fake(f"saved_model/{model}/1", model, "saved_model", "fp32", "tf_cpu", 2,
                      1.0 * scale),
                 fake(f"tflite/{model}_fp32.tflite", model, "tflite", "fp32", "tflite_xnnpack",
                      2, 0.9 * scale),
                 fake(f"onnx/{model}.onnx", model, "onnx", "fp32", "onnxruntime_cpu", 2,
                      1.4 * scale)]
    rows.append(fake("tflite/icnet_int8.tflite", "icnet", "tflite", "int8", "tflite_xnnpack", 2,
                     0.12))
    rows.append({**fake("tflite/icnet_int8.tflite", "icnet", "tflite", "int8", "tflite_gpu",
                        None, 1), "status": "unavailable", "reason": "no GPU",
                 "median_s": None})
    models = {"icnet": {"params": 10, "gflops": 1.0, "pruned": True,
                        "reference": {"miou": 0.5}},
              "icnet_unpruned": {"params": 40, "gflops": 4.0, "pruned": False}}
    return rows, models


def test_acceptance_ratios_of_a_pruned_export():
    results, models = pruned_export_results()
    assert report_lib.full_width_model(results, models) == "icnet_unpruned"
    assert report_lib.pruned_model(results, models) == "icnet"
    rows = {row["check"]: row for row in report_lib.acceptance_ratios(results, models, 2)}
    expected = {
        "pruned / full-width fp32 TFLite XNNPACK": (0.3, True),
        "int8 / fp32 TFLite XNNPACK of the pruned model": (0.12 / 0.27, True),
        "pruned int8 TFLite XNNPACK / pruned fp32 SavedModel tf_cpu": (0.4, True),
        "TFLite fp32 XNNPACK / SavedModel tf_cpu (icnet)": (0.9, True),
        "onnxruntime_cpu / SavedModel tf_cpu (icnet_unpruned)": (1.4, False),
    }
    for check, (value, met) in expected.items():
        assert rows[check]["value"] == pytest.approx(value), check
        assert rows[check]["met"] is met, check
    fastest = rows["pruned int8 TFLite XNNPACK (post-training or QAT) is the fastest CPU "
                   "artifact"]
    assert fastest["met"] is True and "icnet_int8.tflite" in fastest["value"]
    # Missing results are n/a with the reason, never a verdict.
    rows = {row["check"]: row for row in report_lib.acceptance_ratios(results, models, 4)}
    assert rows["pruned / full-width fp32 TFLite XNNPACK"]["met"] is None
    assert "4 threads" in rows["pruned / full-width fp32 TFLite XNNPACK"]["why"]
    # Without the models dict the `_unpruned` suffix still identifies the baseline.
    assert report_lib.full_width_model(results, {}) == "icnet_unpruned"
    assert report_lib.pruned_model(results, {}) == "icnet"


def test_report_markdown_of_a_pruned_export(tmp_path):
    results, models = pruned_export_results()
    latency = {"machine": {"cpu_model": "Test CPU", "logical_cores": 2, "gpus": []},
               "settings": {"runs": 5, "warmup": 1}, "results": results, "complete": True}
    export_report = {"input_size": [1025, 2049], "models": models,
                     "artifacts": [{"path": "tflite/icnet_int8.tflite", "miou": 0.49}]}
    text = report_lib.markdown(latency, export_report, 2)
    rows = {line.split(" | ")[0][3:-1] + " " + line.split(" | ")[4]: line
            for line in text.splitlines() if line.startswith("| `")}
    assert "| 1.00x (baseline) |" in rows["saved_model/icnet_unpruned/1 tf_cpu"]
    assert "| 3.33x |" in rows["saved_model/icnet/1 tf_cpu"]
    assert "| 49.00% |" in rows["tflite/icnet_int8.tflite tflite_xnnpack"]
    assert "| 8.33x |" in rows["tflite/icnet_int8.tflite tflite_xnnpack"]
    assert "no GPU" in rows["tflite/icnet_int8.tflite tflite_gpu"]
    assert "| NOT met |" in text and "| met |" in text
    assert "| 1 s | 0.518 s | 1.93 |" in text  # full-width SavedModel vs reference fs=2
    assert "not comparable with the published timings" not in text
    path = report_lib.write_report(latency, export_report, str(tmp_path))
    assert os.path.basename(path) == "REPORT.md"


def test_discovery_and_flag_parsing(export_dir):
    artifacts, missing = latency_lib.discover_artifacts(
        export_dir, export_lib.read(export_dir))
    assert [a.path for a in artifacts] == list(ARTIFACTS) and missing == []
    assert latency_lib.parse_runtimes("tflite,onnxruntime_cpu") == (
        "tflite_xnnpack", "tflite_reference", "tflite_gpu", "onnxruntime_cpu")
    assert latency_lib.parse_runtimes("tf", xla=True) == ("tf_cpu", "tf_xla_cpu", "tf_gpu")
    assert set(latency_lib.parse_runtimes("tf,tflite,onnx")) == set(RUNTIMES) - {"tf_xla_cpu"}
    assert latency_lib.parse_threads("4,1,2,2") == (1, 2, 4)
    with pytest.raises(ValueError, match=r"--runtimes: unknown \['tpu'\]"):
        latency_lib.parse_runtimes("tflite,tpu")
    # The TensorFlow-free copy of the quantization names that file discovery uses.
    assert latency_lib.QUANTIZATIONS == QUANTIZATIONS
    log = ("INFO: [x.cc:1] fine\nERROR: [delegate_webgpu.cc:359] Failed to initialize WebGPU "
           "environment: INTERNAL: No adapters found\nE0000 00:00:1.5   14 cuda.cc:52] failed "
           "call to cuInit\n└ ERROR: [a.cc:2]\n")
    assert latency_lib.native_errors(log) == [
        "Failed to initialize WebGPU environment: INTERNAL: No adapters found",
        "failed call to cuInit"]


@pytest.mark.parametrize("args, flag", [
    (["--runtimes", "tflite,cuda_magic"], "--runtimes"),
    (["--threads", "0"], "--threads"),
    (["--threads", "two"], "--threads"),
    (["--runs", "0"], "--runs"),
    (["--rounds", "0"], "--rounds"),
])
def test_latency_bad_flags(export_dir, tmp_path, args, flag):
    done = run_module("benchmarks.latency", "--export_dir", export_dir, "--json",
                      str(tmp_path / "x.json"), *args, timeout=60)
    assert done.returncode != 0 and f"error: {flag}" in done.stderr, done.stderr
    assert not os.path.exists(tmp_path / "x.json")


def test_latency_and_report_bad_paths(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory in (str(tmp_path / "missing"), str(empty)):
        done = run_module("benchmarks.latency", "--export_dir", directory, "--json",
                          str(tmp_path / "x.json"), timeout=60)
        assert done.returncode != 0 and "error: --export_dir" in done.stderr, done.stderr
        assert directory in done.stderr
    done = run_module("benchmarks.report", "--latency", str(tmp_path / "nope.json"), "--out",
                      str(tmp_path / "r"), timeout=60)
    assert done.returncode != 0 and "error: --latency" in done.stderr, done.stderr
    (tmp_path / "bad.json").write_text("{}")
    done = run_module("benchmarks.report", "--latency", str(tmp_path / "bad.json"),
                      "--export_dir", str(empty), timeout=60)
    assert done.returncode != 0 and "not a benchmarks.latency file" in done.stderr


def test_conv_latency_times_every_distinct_convolution(tmp_path):
    path = str(tmp_path / "convs.json")
    done = run_module("benchmarks.conv_latency", "--filter_scale", "0.125", "--input_size",
                      "193x257", "--threads", "1", "--warmup", "0", "--runs", "1",
                      "--split_mib", "0.02", "--json", path)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(path) as f:
        result = json.load(f)
    merged = build_icnet(ICNetConfig.from_filter_scale(0.125, 19, batch_norm=False), SIZE)
    convs = [layer.name for layer in merged.layers if isinstance(layer, tf_keras.layers.Conv2D)]
    rows = result["rows"]
    assert sorted(name for row in rows for name in row["layers"]) == sorted(convs)
    assert sum(row["count"] for row in rows) == len(convs) > len(rows)
    assert all(row["tf_s"] > 0 and row["tflite_s"] > 0 and row["gflops"] > 0 for row in rows)
    kernel_mib = {layer.name: 4 * layer.kernel.shape.num_elements() / 2**20
                  for layer in merged.layers if isinstance(layer, tf_keras.layers.Conv2D)}
    assert all(row["weights_mib"] == pytest.approx(kernel_mib[name])
               for row in rows for name in row["layers"])
    assert result["totals"]["tf_s"] == pytest.approx(
        sum(row["tf_s"] * row["count"] for row in rows))
    excess = [(row["tflite_s"] - row["tf_s"]) * row["count"] for row in rows]
    assert excess == sorted(excess, reverse=True)
    assert "| total (weighted by count) |" in done.stdout
    split = [row for row in rows if "split" in row]
    assert split and all(row["weights_mib"] > 0.02 for row in split)
    def widest_group_mib(row, groups):
        return math.ceil(row["filters"] / groups) * row["weights_mib"] / row["filters"]

    assert all(widest_group_mib(row, row["split"]["groups"]) <= 0.02
               < widest_group_mib(row, row["split"]["groups"] - 1) for row in split)
    assert all(row["split"]["tf_s"] > 0 and row["split"]["tflite_s"] > 0 for row in split)
    assert "| layers | weights MiB | groups |" in done.stdout

    bad = run_module("benchmarks.conv_latency", "--threads", "0", timeout=60)
    assert bad.returncode != 0 and "error: --threads" in bad.stderr
    bad = run_module("benchmarks.conv_latency", "--split_mib", "0", timeout=60)
    assert bad.returncode != 0 and "error: --split_mib must be > 0" in bad.stderr


def test_select_plan_takes_model_dir_or_plan_file(tmp_path):
    pruned = ICNetConfig.from_filter_scale(0.25, 7)
    pruned.save(str(tmp_path / "plan.json"))
    assert select_plan(str(tmp_path), None, 2.0, 19) == (pruned, str(tmp_path))
    plan_file = str(tmp_path / "plan.json")
    assert select_plan(None, plan_file, 2.0, 19) == (pruned, plan_file)
    assert select_plan(None, None, 2.0, 19) == (ICNetConfig.from_filter_scale(2.0, 19),
                                                "filter_scale=2")
    with pytest.raises(FileNotFoundError, match="no plan.json"):
        select_plan(str(tmp_path / "empty"), None, 2.0, 19)
    with pytest.raises(ValueError, match="give --model_dir or --plan, not both"):
        select_plan(str(tmp_path), plan_file, 2.0, 19)
    done = run_module("benchmarks.conv_latency", "--plan", str(tmp_path / "missing.json"),
                      timeout=60)
    assert done.returncode != 0 and "plan file not found" in done.stderr


def test_output_groups_bound_the_widest_group():
    # Uneven splits: 1024 filters of 72 MiB in 1.2 MiB groups need 61 groups, not 60 (60 would
    # leave 18-channel groups of 1.27 MiB); 4 one-MiB filters under 1.5 MiB need 4 groups.
    assert output_groups(72.0, 1024, 1.2) == 61
    assert output_groups(4.0, 4, 1.5) == 4
    assert output_groups(4.5, 256, 1.2) == 4
    assert output_groups(0.5, 8, 1.2) == 1
    assert output_groups(1.0, 10, 0.3) == 4  # 0.3 / 0.1 is 2.999... in floating point
