"""`make demo` in quick mode: the whole pipeline (render, train, prune + export every format
and quantization, benchmarks, report, predict) with a tiny model and input."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

QUICK = {
    "DEMO_INPUT_SIZE": "193x257", "DEMO_SCENE_SIZE": "192x256", "DEMO_FILTER_SCALE": "0.25",
    "DEMO_STEPS": "2", "DEMO_BATCH": "2", "DEMO_CROP": "161x225", "DEMO_SCENES": "8",
    "DEMO_FINETUNE_STEPS": "2", "DEMO_QAT_STEPS": "1",
    "DEMO_CALIBRATION": "4", "DEMO_PARITY": "2", "DEMO_EVAL": "2",
    "DEMO_FLOOR_FLAGS": "--nofloors",  # a 2-step tiny model's int8 is below the 98% floor
    "DEMO_BENCH_FLAGS": "--threads 1 --warmup 1 --runs 2 "
                        "--runtimes tf_cpu,tflite_xnnpack,onnxruntime_cpu,openvino_cpu",
}


@pytest.mark.long
def test_quick_demo_runs_the_whole_pipeline(tmp_path):
    demo_dir, report_dir = tmp_path / "demo", tmp_path / "reports"
    variables = {**QUICK, "PY": sys.executable, "STAMP": "", "DEMO_DIR": str(demo_dir),
                 "REPORT_DIR": str(report_dir)}
    result = subprocess.run(["make", "--no-print-directory", "-C", REPO, "demo",
                             *(f"{k}={v}" for k, v in variables.items())],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for step in range(1, 7):
        assert f"== demo {step}/6" in result.stdout

    with open(demo_dir / "export" / "export_report.json") as f:
        export_report = json.load(f)
    models = export_report["models"]
    assert models["icnet"]["pruned"] and not models["icnet_unpruned"]["pruned"]
    assert models["icnet"]["params"] < models["icnet_unpruned"]["params"]
    paths = {a["path"] for a in export_report["artifacts"]}
    assert {f"tflite/icnet_{q}.tflite" for q in ("fp32", "fp16", "dynamic", "int8", "qat")} \
        | {"tflite/icnet_unpruned_fp32.tflite", "onnx/icnet.onnx", "onnx/icnet_int8.onnx",
           "onnx/icnet_unpruned.onnx", "openvino/icnet.xml", "openvino/icnet_int8.xml",
           "openvino/icnet_unpruned.xml", "saved_model/icnet/1",
           "saved_model/icnet_unpruned/1"} == paths

    with open(demo_dir / "latency.json") as f:
        results = json.load(f)["results"]
    measured = {(r["artifact"], r["runtime"]) for r in results if r["status"] == "ok"}
    expected_runtime = {"saved_model": "tf_cpu", "tflite": "tflite_xnnpack",
                        "onnx": "onnxruntime_cpu", "openvino": "openvino_cpu"}
    for path in paths:
        assert (path, expected_runtime[path.split("/")[0]]) in measured, path

    report = (report_dir / "REPORT.md").read_text()
    for path in paths:
        assert path in report
    assert "Acceptance ratios" in report
    for name in os.listdir(report_dir):
        if name.endswith(".png"):
            assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (demo_dir / "overlay.png").stat().st_size > 0
