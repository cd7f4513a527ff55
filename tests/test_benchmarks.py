"""benchmarks.latency and benchmarks.report on one tiny export (1/8 width, 193x257).

The export (SavedModel, ONNX, TFLite fp32 and int8) is made once; the latency binary runs as a
subprocess with 1 thread, 1 warm-up and 2 timed calls. Every registered runtime runs the
export's artifacts of its format through one parity check against the Keras model, and a
runtime registered from outside deploy.runtimes (tests/dummy_runtime.py) is benchmarked like
the built-in ones. Acceptance ratios of a pruned export are checked on hand-made results (no
second export).
"""

import importlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tf_keras
from conftest import REPO, rel_l2
from PIL import Image

from benchmarks import latency_lib, report_lib
from benchmarks.conv_timing import output_groups
from benchmarks.machine import gpu_names
from deploy import layout, runtimes, segment, timing_worker
from deploy.export_lib import ExportOptions, export
from deploy.report import (Accuracy, ArtifactReport, ExportReport, ModelReport, Verification)
from deploy.runtimes.tensorflow import KerasSession
from deploy.verify import SourceImages
from icnet import cpu
from icnet.checkpoint import select_plan
from icnet.config import ICNetConfig
from icnet.data import make_source
from icnet.exits import OptionError
from icnet.inference import load_weights
from icnet.model import build_icnet
from icnet.weights import assign_weights, model_weights, save_npy_weights

# One worker runs this module: its module-scoped exports are made once (make test runs
# pytest with --dist loadgroup).
pytestmark = pytest.mark.xdist_group("benchmarks")

TESTS = os.path.join(REPO, "tests")
SIZE = (193, 257)
ARTIFACTS = ("saved_model/icnet/1", "onnx/icnet.onnx", "onnx/icnet_int8.onnx",
             "openvino/icnet.xml", "openvino/icnet_int8.xml", "tflite/icnet_fp32.tflite",
             "tflite/icnet_int8.tflite")


def family(fmt, device):
    """The runtimes a family name in --runtimes stands for, of one device kind."""
    return tuple(r.name for r in runtimes.for_format(fmt) if not r.opt_in and r.device == device)


def needs_hardware(runtime) -> bool:
    """A runtime that runs only on CPUs with native bf16 or fp16 arithmetic."""
    return runtime.precision in ("bf16", "fp16")


def hardware_reason(runtime) -> str | None:
    """None where this CPU has what the runtime needs, else the runtime's own reason."""
    has = cpu.has_bf16() if runtime.precision == "bf16" else cpu.has_fp16()
    return None if has else runtime.available()
FAST = ["--runs", "2", "--warmup", "1", "--threads", "1"]


def run_module(module, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory):
    """A tiny random BN model's weights (.npy): what the export is made from."""
    tf_keras.utils.set_random_seed(0)
    config = ICNetConfig.from_filter_scale(0.125, 19, batch_norm=True)
    weights = str(tmp_path_factory.mktemp("weights") / "tiny_bn.npy")
    save_npy_weights(model_weights(build_icnet(config, (161, 161))), weights)
    return weights


@pytest.fixture(scope="module")
def export_dir(weights_path, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("export"))
    options = ExportOptions(directory, input_size=SIZE,
                            formats=("saved_model", "tflite", "onnx", "openvino"),
                            quantizations=("fp32", "int8"), parity_images=1, eval_images=2,
                            floors=False,
                            calibration_images=4, gpu_check="none")
    report = export(weights_path, options,
                    make_source("synthetic", "train", synthetic_size=SIZE),
                    make_source("synthetic", "val", synthetic_size=SIZE))
    assert isinstance(report, ExportReport)
    assert ExportReport.read(directory) == report
    return directory


@pytest.fixture(scope="module")
def latency_json(export_dir, tmp_path_factory):
    """Every runtime family (tflite_reference included) at 1 thread."""
    path = str(tmp_path_factory.mktemp("latency") / "latency.json")
    done = run_module("benchmarks.latency", "--export_dir", export_dir, "--json", path, *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "case 1/" in done.stderr
    assert "error:" not in done.stderr
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
        for runtime in family(fmt, "cpu"):
            r = results[(artifact, runtime, 1)]
            assert r["format"] == fmt and r["model"] == "icnet"
            assert r["quantization"] == ("int8" if "int8" in artifact else "fp32")
            if needs_hardware(runtimes.get(runtime)) and hardware_reason(runtimes.get(runtime)):
                assert r["status"] == "unavailable" and r["reason"], r  # says what is missing
                continue
            assert r["status"] == "ok", r
            assert 0 < r["median_s"] <= r["p90_s"]
            assert r["fps"] == pytest.approx(1 / r["median_s"])
            assert r["peak_rss_bytes"] > 2**20 and r["size_bytes"] > 0
            assert r["input_size"] == list(SIZE) and len(r["times_s"]) == 2
        for runtime in family(fmt, "gpu"):
            r = results[(artifact, runtime, None)]
            assert r["format"] == fmt and r["model"] == "icnet"
            if not machine["gpus"] and r["status"] == "ok":  # the software Vulkan device
                assert runtime == "tflite_gpu" and r["software_device"] is True, r
                assert "software" in r["vulkan_device"], r
            elif not machine["gpus"]:  # no GPU: every GPU runtime says why it cannot run
                assert r["status"] == "unavailable", r
            # Whatever the machine: a result is a measurement, or says why there is none.
            if r["status"] == "ok":
                assert 0 < r["median_s"] <= r["p90_s"] and len(r["times_s"]) == 2, r
                assert r["fps"] == pytest.approx(1 / r["median_s"])
            elif r["status"] == "unavailable":
                assert isinstance(r["reason"], str) and r["reason"].strip(), r
                assert r["median_s"] is None
            else:
                assert r["status"] == "failed", r
                assert isinstance(r["error"], str) and r["error"].strip(), r
                assert r["median_s"] is None
    assert len(data["results"]) == sum(
        len(family(a.split("/")[0], "cpu")) + len(family(a.split("/")[0], "gpu"))
        for a in ARTIFACTS)
    # OpenVINO reports the kernels it chose (bf16 ones under the bf16 hint where it runs).
    for artifact, runtime in (("openvino/icnet.xml", "openvino_cpu"),
                              ("openvino/icnet_int8.xml", "openvino_cpu")):
        kernels = results[(artifact, runtime, 1)]["conv_kernels"]
        assert sum(kernels.values()) >= 60 and all(isinstance(k, str) for k in kernels)
    assert any("I8" in k for k in results[("openvino/icnet_int8.xml", "openvino_cpu", 1)][
        "conv_kernels"])
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
    result = timing_worker.run_worker(crash, out, None, 60)
    assert result["status"] == "failed" and "SIGSEGV" in result["error"]
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    result = timing_worker.run_worker(hang, out, None, 0.5)
    assert result == {"status": "failed", "error": "timed out after 0.5 s",
                      "wall_s": pytest.approx(0.5, abs=5)}


def test_report_binary(export_dir, latency_json, tmp_path):
    path, data = latency_json
    out = str(tmp_path / "reports")
    done = run_module("benchmarks.report", "--export_dir", export_dir, "--latency", path,
                      "--output_dir", out)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, "REPORT.md")) as f:
        text = f.read()
    assert "## Machine" in text and data["machine"]["cpu_model"] in text
    assert "- GPU: none" in text or data["machine"]["gpus"]
    assert "input size: 193x257" in text
    assert "## Acceptance ratios (2 threads)" in text and "<= 1.15" in text
    assert "- model `icnet`:" in text and ", unpruned, fp32 mIoU" in text
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
    rows.append(fake("openvino/icnet.xml", "icnet", "openvino", "fp32", "openvino_cpu_bf16", 2,
                     0.05))
    rows.append(fake("openvino/icnet_int8.xml", "icnet", "openvino", "int8", "openvino_cpu", 2,
                     0.03))  # the fastest, but below the accuracy bar: not "verified"
    rows.append(fake("saved_model/icnet_unpruned/1", "icnet_unpruned", "saved_model", "fp32",
                     "tf_cpu_bf16", 2, 0.45))
    rows.append({**fake("tflite/icnet_int8.tflite", "icnet", "tflite", "int8", "tflite_gpu",
                        None, 1), "status": "unavailable", "reason": "no GPU",
                 "median_s": None})
    models = {"icnet": ModelReport(num_classes=19, params=10, flops=10**9, gflops=1.0,
                                   pruned=True, plan={},
                                   reference=Accuracy(miou=0.5, pixel_accuracy=0.9,
                                                      eval_images=2)),
              "icnet_unpruned": ModelReport(num_classes=19, params=40, flops=4 * 10**9,
                                            gflops=4.0, pruned=False, plan={})}
    def checked(runtime, agreement, delta, floor=None):
        return Verification(runtime=runtime, argmax_agreement=agreement, miou=0.5 + delta,
                            miou_delta=delta, below_floor=floor)

    artifacts = [
        ArtifactReport(path="tflite/icnet_int8.tflite", model="icnet", format="tflite",
                       quantization="int8", size_bytes=2**20,
                       verifications=[checked("tflite_xnnpack", 0.99, -0.01)]),
        ArtifactReport(path="openvino/icnet.xml", model="icnet", format="openvino",
                       quantization="fp32", size_bytes=2**20,
                       verifications=[checked("openvino_cpu_bf16", 0.985, -0.005)]),
        ArtifactReport(path="openvino/icnet_int8.xml", model="icnet", format="openvino",
                       quantization="int8", size_bytes=2**20,
                       verifications=[checked("openvino_cpu", 0.95, -0.02,
                                              "argmax agreement 95.000% < 98%")]),
        ArtifactReport(path="saved_model/icnet_unpruned/1", model="icnet_unpruned",
                       format="saved_model", quantization="fp32", size_bytes=2**20,
                       verifications=[checked("tf_cpu_bf16", 0.995, 0.0)])]
    report = ExportReport(model_name="icnet", version=1, source="runs/p", input_size=[1025, 2049],
                          models=models, artifacts=artifacts, data={"eval": "synthetic"})
    return rows, report


def test_acceptance_ratios_of_a_pruned_export():
    results, report = pruned_export_results()
    assert report.full_width_model() == "icnet_unpruned"
    assert report.pruned_model() == "icnet"
    rows = {row["check"]: row for row in report_lib.acceptance_ratios(results, report, 2)}
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
    # The fastest result that passes its verification (the int8 IR is faster but below the
    # bar): OpenVINO bf16, 0.05 / 0.12 of the int8 TFLite under XNNPACK.
    fastest = rows["fastest verified CPU artifact of the pruned model / pruned int8 TFLite "
                   "XNNPACK"]
    assert fastest["value"] == pytest.approx(0.05 / 0.12) and fastest["met"] is True
    assert "openvino_cpu_bf16" in fastest["numerator"] and "agreement 98.50%" in fastest["note"]
    bf16 = rows["full-width fp32 SavedModel tf_cpu_bf16 / tf_cpu"]
    assert bf16["value"] == pytest.approx(0.45) and bf16["met"] is True
    assert report_lib.fastest_verified(results, report, "icnet", 2)["artifact"] == \
        "openvino/icnet.xml"
    # Missing results are n/a with the reason, never a verdict.
    rows = {row["check"]: row for row in report_lib.acceptance_ratios(results, report, 4)}
    assert rows["pruned / full-width fp32 TFLite XNNPACK"]["met"] is None
    assert "4 threads" in rows["pruned / full-width fp32 TFLite XNNPACK"]["why"]
    # The models' `pruned` flags decide which is which, not their names.
    renamed = ExportReport(model_name="b", version=1, source="x", input_size=[1025, 2049],
                           models={"a": report.models["icnet_unpruned"],
                                   "b": report.models["icnet"]}, artifacts=[])
    assert renamed.full_width_model() == "a" and renamed.pruned_model() == "b"
    unpruned_only = ExportReport(model_name="icnet", version=1, source="x",
                                 input_size=[1025, 2049],
                                 models={"icnet": report.models["icnet_unpruned"]},
                                 artifacts=[])
    assert unpruned_only.full_width_model() == "icnet" and unpruned_only.pruned_model() is None
    rows = report_lib.acceptance_ratios(results, unpruned_only, 2)
    pruned_checks = [row for row in rows if "pruned" in row["check"].split("(")[0]
                     and "full-width fp32 SavedModel" not in row["check"]]
    assert len(pruned_checks) == 4
    assert all(row["met"] is None and row["why"] == "the export has no pruned model"
               for row in pruned_checks)


def test_report_markdown_of_a_pruned_export(tmp_path):
    results, report = pruned_export_results()
    latency = {"machine": {"cpu_model": "Test CPU", "logical_cores": 2, "gpus": []},
               "settings": {"runs": 5, "warmup": 1}, "results": results, "complete": True}
    text = report_lib.markdown(latency, report, 2)
    table = text[text.index("## Results"):text.index("## Acceptance")]
    rows = {line.split(" | ")[0][3:-1] + " " + line.split(" | ")[4]: line
            for line in table.splitlines() if line.startswith("| `")}
    assert len(rows) == len(results)
    assert "| 1.00x (baseline) |" in rows["saved_model/icnet_unpruned/1 tf_cpu"]
    assert "| 3.33x |" in rows["saved_model/icnet/1 tf_cpu"]
    assert "| 49.00% |" in rows["tflite/icnet_int8.tflite tflite_xnnpack"]
    assert "| 8.33x |" in rows["tflite/icnet_int8.tflite tflite_xnnpack"]
    assert "no GPU" in rows["tflite/icnet_int8.tflite tflite_gpu"]
    # mIoU is the verification under the row's runtime: none under tflite_gpu.
    assert "49.00%" not in rows["tflite/icnet_int8.tflite tflite_gpu"]
    assert "| NOT met |" in text and "| met" in text
    assert "| 1 s | 0.518 s | 1.93 |" in text  # full-width SavedModel vs reference fs=2
    deploy = text[text.index("## What to deploy"):text.index("## Reference numbers")]
    assert "| x86 edge box or server, any runtime | `openvino/icnet.xml` | openvino_cpu_bf16 |" \
        in deploy
    assert "| ARM phone CPU | `tflite/icnet_int8.tflite` | tflite_xnnpack |" in deploy
    fastest_first = [line for line in deploy.splitlines() if line.startswith("| `")]
    assert fastest_first[0].startswith("| `openvino/icnet_int8.xml` | openvino_cpu | 30.00 ms |")
    assert "(below the bar)" in fastest_first[0]
    assert "not comparable with the published timings" not in text
    path = report_lib.write_report(latency, report, str(tmp_path))
    assert os.path.basename(path) == "REPORT.md"
    with open(path) as f:
        assert f.read() == text
    # The typed report survives its JSON round trip (what benchmarks.report reads).
    (tmp_path / "export").mkdir()
    report.write(str(tmp_path / "export"))
    again = ExportReport.read(str(tmp_path / "export"))
    assert again == report and again.schema_version == report.schema_version
    assert report_lib.markdown(latency, again, 2) == text


def test_discovery_and_flag_parsing(export_dir):
    report = ExportReport.read(export_dir)
    artifacts, missing = latency_lib.artifacts_of(export_dir, report)
    assert [a.path for a in artifacts] == list(ARTIFACTS) and missing == []
    assert all(a.model == "icnet" and a.size_bytes > 0 for a in artifacts)
    assert [a.quantization for a in artifacts] == [
        "int8" if "int8" in path else "fp32" for path in ARTIFACTS]
    assert latency_lib.parse_runtimes("tflite,onnxruntime_cpu") == (
        "tflite_xnnpack", "tflite_reference", "tflite_xnnpack_fp16", "tflite_gpu",
        "onnxruntime_cpu")
    assert latency_lib.parse_runtimes("tf", xla=True) == ("tf_cpu", "tf_cpu_bf16", "tf_xla_cpu",
                                                          "tf_gpu")
    assert set(latency_lib.parse_runtimes("tf,tflite,onnx,openvino")) == set(
        runtimes.REGISTRY) - {"tf_xla_cpu"}
    assert latency_lib.parse_threads("4,1,2,2") == (1, 2, 4)
    with pytest.raises(OptionError, match=r"runtimes: unknown \['tpu'\]") as error:
        latency_lib.parse_runtimes("tflite,tpu")
    assert error.value.option == "runtimes"
    cases = latency_lib.plan_cases(artifacts, ("tf_cpu", "tflite_gpu", "onnxruntime_cpu"), (1, 2))
    assert [(c.artifact.path, c.runtime, c.threads) for c in cases] == [
        ("saved_model/icnet/1", "tf_cpu", 1), ("saved_model/icnet/1", "tf_cpu", 2),
        ("onnx/icnet.onnx", "onnxruntime_cpu", 1), ("onnx/icnet.onnx", "onnxruntime_cpu", 2),
        ("onnx/icnet_int8.onnx", "onnxruntime_cpu", 1),
        ("onnx/icnet_int8.onnx", "onnxruntime_cpu", 2),
        ("tflite/icnet_fp32.tflite", "tflite_gpu", None),
        ("tflite/icnet_int8.tflite", "tflite_gpu", None)]
    log = ("INFO: [x.cc:1] fine\nERROR: [delegate_webgpu.cc:359] Failed to initialize WebGPU "
           "environment: INTERNAL: No adapters found\nE0000 00:00:1.5   14 cuda.cc:52] failed "
           "call to cuInit\n└ ERROR: [a.cc:2]\n")
    assert timing_worker.native_errors(log) == [
        "Failed to initialize WebGPU environment: INTERNAL: No adapters found",
        "failed call to cuInit"]


MODEL_NAMES = ("icnet", "icnet_unpruned", "ICNet-v2", "fp32", "int8_model", "a_b_c", "_", "7")


def test_layout_paths_parse_back_and_discovery_finds_the_export(export_dir):
    """`parse_artifact_path` inverts `artifact_path` for every format and quantization the
    layout writes; discovery finds exactly the export's artifacts."""
    checked = 0
    for fmt in layout.FORMATS:
        assert layout.FORMAT_QUANTIZATIONS[fmt], fmt
        for quantization in layout.FORMAT_QUANTIZATIONS[fmt]:
            assert fmt in layout.formats_of(quantization)
            for model in MODEL_NAMES:
                assert layout.check_model_name(model) == model
                for version in (1, 12):
                    path = layout.artifact_path(model, fmt, quantization, version)
                    expected = layout.ArtifactName(
                        path, fmt, model, quantization,
                        version if fmt == "saved_model" else None)
                    assert layout.parse_artifact_path(path) == expected, path
                    checked += 1
    assert checked == 2 * len(MODEL_NAMES) * sum(
        len(layout.FORMAT_QUANTIZATIONS[f]) for f in layout.FORMATS)
    # Every quantization the kit knows is written in some format.
    assert all(layout.formats_of(q) for q in layout.QUANTIZATIONS)
    for fmt in layout.FORMATS:
        for quantization in set(layout.QUANTIZATIONS) - set(layout.FORMAT_QUANTIZATIONS[fmt]):
            with pytest.raises(ValueError, match=f"{fmt} is not written in"):
                layout.artifact_path("icnet", fmt, quantization)
    for name in ("icnet_int8", "icnet_qat", "bad name", ""):
        with pytest.raises(ValueError, match="model name"):
            layout.check_model_name(name)
    # A file the layout did not name is still found, without a model or quantization.
    assert layout.parse_artifact_path("tflite/garbage.tflite") == layout.ArtifactName(
        "tflite/garbage.tflite", "tflite", None, None)
    assert layout.parse_artifact_path("plan.json") is None
    assert layout.parse_artifact_path("saved_model/icnet/latest") is None

    found = layout.discover(export_dir)
    report = ExportReport.read(export_dir)
    assert sorted(a.path for a in found) == sorted(ARTIFACTS)
    assert sorted(a.path for a in report.artifacts) == sorted(ARTIFACTS)
    for name in found:
        assert name == layout.parse_artifact_path(name.path)
        assert layout.artifact_path(name.model, name.format, name.quantization,
                                    name.version or 1) == name.path
        assert layout.is_artifact(os.path.join(export_dir, name.path))
        assert layout.artifact_format(os.path.join(export_dir, name.path)) == name.format
        entry = report.artifact(name.path)
        assert (entry.model, entry.format, entry.quantization) == (
            name.model, name.format, name.quantization)
    assert not layout.is_artifact(os.path.join(export_dir, layout.PLAN_FILENAME))
    assert layout.discover(os.path.join(export_dir, "missing")) == []


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
    assert done.returncode == 2 and f"error: {flag}: " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not os.path.exists(tmp_path / "x.json")


def test_latency_and_report_bad_paths(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory in (str(tmp_path / "missing"), str(empty)):
        done = run_module("benchmarks.latency", "--export_dir", directory, "--json",
                          str(tmp_path / "x.json"), timeout=60)
        assert done.returncode == 2 and "error: --export_dir: " in done.stderr, done.stderr
        assert directory in done.stderr and "Traceback" not in done.stderr
    done = run_module("benchmarks.report", "--latency", str(tmp_path / "nope.json"),
                      "--output_dir", str(tmp_path / "r"), timeout=60)
    assert done.returncode == 2 and "error: --latency: " in done.stderr, done.stderr
    assert not (tmp_path / "r").exists()
    (tmp_path / "bad.json").write_text("{}")
    done = run_module("benchmarks.report", "--latency", str(tmp_path / "bad.json"),
                      "--export_dir", str(empty), timeout=60)
    assert done.returncode == 2 and "not a benchmarks.latency file" in done.stderr


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
    assert bad.returncode == 2 and "error: --threads: " in bad.stderr
    bad = run_module("benchmarks.conv_latency", "--split_mib", "0", timeout=60)
    assert bad.returncode == 2 and "error: --split_mib: must be > 0" in bad.stderr


def test_select_plan_takes_model_or_plan_file(tmp_path):
    pruned = ICNetConfig.from_filter_scale(0.25, 7)
    pruned.save(str(tmp_path / "plan.json"))
    assert select_plan(str(tmp_path), None, 2.0, 19) == (pruned, str(tmp_path))
    plan_file = str(tmp_path / "plan.json")
    assert select_plan(None, plan_file, 2.0, 19) == (pruned, plan_file)
    assert select_plan(None, None, 2.0, 19) == (ICNetConfig.from_filter_scale(2.0, 19),
                                                "filter_scale=2")
    with pytest.raises(FileNotFoundError, match="no plan.json"):
        select_plan(str(tmp_path / "empty"), None, 2.0, 19)
    with pytest.raises(ValueError, match="give --model or --plan, not both"):
        select_plan(str(tmp_path), plan_file, 2.0, 19)
    done = run_module("benchmarks.conv_latency", "--plan", str(tmp_path / "missing.json"),
                      timeout=60)
    assert done.returncode == 2 and "error: plan file not found" in done.stderr
    done = run_module("benchmarks.conv_latency", "--model", str(tmp_path), "--plan", plan_file,
                      timeout=60)
    assert done.returncode == 2 and "error: give --model or --plan, not both" in done.stderr


def test_output_groups_bound_the_widest_group():
    # Uneven splits: 1024 filters of 72 MiB in 1.2 MiB groups need 61 groups, not 60 (60 would
    # leave 18-channel groups of 1.27 MiB); 4 one-MiB filters under 1.5 MiB need 4 groups.
    assert output_groups(72.0, 1024, 1.2) == 61
    assert output_groups(4.0, 4, 1.5) == 4
    assert output_groups(4.5, 256, 1.2) == 4
    assert output_groups(0.5, 8, 1.2) == 1
    assert output_groups(1.0, 10, 0.3) == 4  # 0.3 / 0.1 is 2.999... in floating point


@pytest.fixture(scope="module")
def parity_image():
    """One val image at the export's input size (uint8 [H, W, 3]), as verification reads it."""
    images = list(SourceImages(make_source("synthetic", "val", synthetic_size=SIZE), 1, SIZE))
    assert len(images) == 1 and images[0].shape == (*SIZE, 3) and images[0].dtype == np.uint8
    return images[0]


def machine_has_gpu():
    import tensorflow as tf

    return bool(gpu_names() or tf.config.list_physical_devices("GPU"))


def test_every_registered_runtime_passes_parity_or_says_why_not(export_dir, weights_path,
                                                                parity_image):
    """Every runtime in the registry runs the export's artifacts of its format on one val
    image with the logits of the Keras model (the BN model of the same weights)."""
    config, weights = load_weights(weights_path)
    assert config.batch_norm
    model = build_icnet(config, SIZE)
    assign_weights(model, weights)
    expected = segment.logits(KerasSession(model), parity_image)
    assert expected.shape == (1, 49, 65, 19) and np.abs(expected).max() > 0
    artifacts = {fmt: [a for a in layout.discover(export_dir) if a.format == fmt]
                 for fmt in layout.FORMATS}
    assert sorted(a.path for found in artifacts.values() for a in found) == sorted(ARTIFACTS)
    gpu = machine_has_gpu()
    compared, unavailable = [], {}
    for name, runtime in runtimes.REGISTRY.items():
        assert runtime.name == name and runtime.format in layout.FORMATS
        assert artifacts[runtime.format], name
        reason = runtime.available()
        for artifact in artifacts[runtime.format] if reason is None else []:
            try:
                session = runtime.open(os.path.join(export_dir, artifact.path), 2)
            except runtimes.Unavailable as e:  # found out on opening (e.g. no GPU model)
                reason = e.reason
                break
            assert tuple(session.input_size) == SIZE
            got = segment.logits(session, parity_image)
            assert got.shape == expected.shape and got.dtype == np.float32, (name, artifact)
            agreement = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
            if artifact.quantization == "fp32" and needs_hardware(runtime):  # bf16 arithmetic
                assert rel_l2(got, expected) < 0.03, (name, artifact.path)
                assert agreement >= 0.95, (name, artifact.path, agreement)
            elif artifact.quantization == "fp32":
                assert rel_l2(got, expected) < 1e-4, (name, artifact.path)
                assert agreement >= 0.999, (name, artifact.path, agreement)
            else:
                assert artifact.quantization == "int8"
                assert agreement >= 0.85, (name, artifact.path, agreement)
            compared.append((name, artifact.path))
        if reason is not None:
            assert isinstance(reason, str) and reason.strip(), name
            unavailable[name] = reason
        if runtime.device == "cpu" and needs_hardware(runtime):  # bf16/fp16 where native
            assert (reason is None) == (hardware_reason(runtime) is None), (name, reason)
        elif runtime.device == "cpu":  # every other CPU runtime runs here
            assert reason is None, (name, reason)
        elif not gpu:  # no GPU here: every GPU runtime says why it cannot run
            assert reason is not None, name
    assert set(unavailable) | {name for name, _ in compared} == set(runtimes.REGISTRY)
    for name, runtime in runtimes.REGISTRY.items():
        if name not in unavailable:
            assert {path for n, path in compared if n == name} == {
                a.path for a in artifacts[runtime.format]}, name
    if not gpu:
        assert set(unavailable) == {n for n, r in runtimes.REGISTRY.items()
                                    if r.device == "gpu" or (needs_hardware(r)
                                                             and hardware_reason(r))}


def test_runtimes_that_need_bf16_or_fp16_say_so_on_a_cpu_without_it(monkeypatch):
    """On a CPU without native bf16 (no AMX-BF16, no AVX512-BF16) the bf16 runtimes and bf16
    training's default are off, with the reason; with it they are on."""
    from icnet.training import use_mixed_precision
    monkeypatch.setattr(cpu, "cpuinfo", lambda path="/proc/cpuinfo": ("old CPU",
                                                                      frozenset({"avx2"})))
    for name in ("tf_cpu_bf16", "openvino_cpu_bf16"):
        assert "no native bf16 arithmetic" in runtimes.get(name).available(), name
    assert "no native fp16 arithmetic" in runtimes.get("tflite_xnnpack_fp16").available()
    assert runtimes.get("openvino_cpu").available() is None
    assert use_mixed_precision(None, gpu=False) is False
    monkeypatch.setattr(cpu, "cpuinfo", lambda path="/proc/cpuinfo": ("new CPU", frozenset(
        {"amx_bf16", "amx_int8", "avx512_fp16"})))
    for name in ("tf_cpu_bf16", "openvino_cpu_bf16", "tflite_xnnpack_fp16"):
        assert runtimes.get(name).available() is None, name
    assert use_mixed_precision(None, gpu=False) is True
    assert use_mixed_precision(None, gpu=True) is False  # a GPU's float16 stays opt-in
    assert use_mixed_precision(False, gpu=False) is False


@pytest.mark.parametrize("flags, saturates", [
    ({"sse2", "avx2", "fma"}, True),  # AVX2 only: vpmaddubsw saturates
    ({"sse2", "avx512f", "avx512_vnni"}, False),
    ({"sse2", "avx2", "avx_vnni"}, False),
    ({"sse2", "amx_int8"}, False),
    ({"asimd", "asimddp"}, False),  # aarch64: no vpmaddubsw
])
def test_int8_weights_take_7_bits_only_on_x86_without_vnni(monkeypatch, flags, saturates):
    monkeypatch.setattr(cpu, "cpuinfo", lambda path="/proc/cpuinfo": ("a CPU", frozenset(flags)))
    assert cpu.int8_saturates() is saturates


def test_a_runtime_registered_outside_deploy_is_benchmarked(export_dir, parity_image,
                                                            monkeypatch):
    """tests/dummy_runtime.py registers dummy_onnx_cpu in one line; benchmarks.latency's
    worker processes import its module and time it like a built-in runtime."""
    # Afterwards the registry and sys.modules are as before: other tests do not see the
    # runtime, and a later `import dummy_runtime` registers it again.
    monkeypatch.setattr(runtimes, "REGISTRY", dict(runtimes.REGISTRY))
    monkeypatch.setitem(sys.modules, "dummy_runtime", None)
    del sys.modules["dummy_runtime"]  # a fresh import, which registers the runtime
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (TESTS, os.environ.get("PYTHONPATH")) if p))
    dummy_runtime = importlib.import_module("dummy_runtime")
    runtime = runtimes.get("dummy_onnx_cpu")
    assert type(runtime).__module__ == "dummy_runtime" and runtime.verifies
    assert runtime.format == "onnx" and runtime.device == "cpu"
    assert "dummy_onnx_cpu" in latency_lib.parse_runtimes("onnx")
    assert runtimes.for_format("onnx")[0].name == "onnxruntime_cpu"  # still the default

    data = latency_lib.benchmark(export_dir, ("dummy_onnx_cpu",), (1,), warmup=1, runs=1)
    assert data["complete"] is True
    assert [r["artifact"] for r in data["results"]] == ["onnx/icnet.onnx", "onnx/icnet_int8.onnx"]
    result = data["results"][0]
    assert result["artifact"] == "onnx/icnet.onnx" and result["runtime"] == "dummy_onnx_cpu"
    assert result["status"] == "ok", result
    assert result["median_s"] > 0 and len(result["times_s"]) == 1 and result["threads"] == 1
    assert result["dummy_runtime"] is True  # the worker ran the dummy runtime's session
    assert data["settings"]["runtime_descriptions"]["dummy_onnx_cpu"] == dummy_runtime.ABOUT

    # Real logits: those of ONNX Runtime itself.
    path = os.path.join(export_dir, "onnx", "icnet.onnx")
    mine = segment.logits(runtimes.open_session(path, "dummy_onnx_cpu", threads=1), parity_image)
    theirs = segment.logits(runtimes.open_session(path, "onnxruntime_cpu", threads=1),
                            parity_image)
    assert mine.shape == theirs.shape and np.abs(theirs).max() > 0
    np.testing.assert_array_equal(mine, theirs)
