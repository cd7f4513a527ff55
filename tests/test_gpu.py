"""The GPU-delegate numerics check (deploy.export --gpu_check run): every .tflite through LiteRT's
GPU accelerator on a Vulkan device, here the software one `make gpu-sim` installs (CI installs
it when it can); the run test is skipped, saying why, where there is no device."""

import os
import subprocess
import sys

import pytest
import tf_keras
from conftest import REPO

from benchmarks import report_lib
from deploy.timing_worker import time_artifact
from deploy import vulkan
from deploy.export_lib import GPU_MIN_AGREEMENT, ExportOptions, export
from deploy.report import ExportReport
from icnet.config import ICNetConfig
from icnet.data import make_source
from icnet.exits import OptionError
from icnet.model import build_icnet
from icnet.weights import model_weights, save_npy_weights

SIZE = (193, 257)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    tf_keras.utils.set_random_seed(0)
    model = build_icnet(ICNetConfig.from_filter_scale(0.125, 19), (161, 161))
    path = str(tmp_path_factory.mktemp("weights") / "tiny.npy")
    save_npy_weights(model_weights(model), path)
    return path


def test_gpu_run_measures_the_tflite_on_the_vulkan_device_and_times_it(weights_file, tmp_path):
    """The export's GPU check on the device, then benchmarks.latency's tflite_gpu case on it
    (one test: the device compiles the model's shaders once, then reads them from its cache)."""
    try:
        device = vulkan.devices()[0]
    except vulkan.NoVulkanDevice as e:
        pytest.skip(f"no Vulkan device here ({e}); `make gpu-sim` installs a software one")
    out = str(tmp_path / "export")
    options = ExportOptions(out, input_size=SIZE, formats=("tflite",), quantizations=("fp32",),
                            parity_images=1, eval_images=1, calibration_images=0,
                            gpu_check="run", gpu_images=1)
    report = export(weights_file, options, make_source("synthetic", "train", synthetic_size=SIZE),
                    make_source("synthetic", "val", synthetic_size=SIZE))
    gpu = report.artifact("tflite/icnet_fp32.tflite").gpu
    assert (gpu.method, gpu.images, gpu.device) == ("run", 1, device.describe()), gpu.note
    assert gpu.software_device == device.software
    # The default GPU precision computes in fp16: close to the fp32 model, not equal.
    assert gpu.argmax_agreement >= GPU_MIN_AGREEMENT[True] and gpu.safe, gpu
    assert 0 < gpu.max_abs_error < 0.2 and abs(gpu.miou_delta) < 0.02, gpu
    assert gpu.compatible is True  # the Analyzer's verdict is kept beside it
    assert ExportReport.read(out) == report
    with open(os.path.join(out, "export_report.md")) as f:
        assert f"GPU-safe: {100 * gpu.argmax_agreement:.2f}% argmax" in f.read()
    path = os.path.join(out, "tflite", "icnet_fp32.tflite")
    timed = time_artifact(path, "tflite_gpu", None, warmup=1, runs=2, software_gpu=True)
    assert timed["status"] == "ok", timed
    assert timed["software_device"] == device.software and timed["fully_accelerated"]
    assert timed["vulkan_device"] == device.describe()
    # Without software_gpu the worker sees only the Vulkan devices of this environment.
    try:
        vulkan.devices_in_this_process()
    except vulkan.NoVulkanDevice:
        plain = time_artifact(path, "tflite_gpu", None, warmup=1, runs=1)
        assert plain["status"] == "unavailable" and plain["reason"], plain


def test_gpu_run_without_a_vulkan_device_is_one_line(weights_file, tmp_path):
    env = dict(os.environ, ICNET_GPU_SIM=str(tmp_path), VK_ICD_FILENAMES="/nonexistent.json",
               VK_DRIVER_FILES="/nonexistent.json")
    out = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-m", "deploy.export", "--model", weights_file, "--export_dir", str(out),
         "--input_size", "193x257", "--formats", "tflite", "--quantize", "fp32",
         "--gpu_check", "run", "--synthetic_size", "193x257"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "--gpu_check" in last and "Vulkan" in last and "make gpu-sim" in last, last
    assert not out.exists()


@pytest.mark.parametrize("changes, message", [
    ({"gpu_check": "always"}, "must be one of analyzer, run, none"),
    ({"gpu_check": "run", "formats": ("onnx",)}, "run needs tflite in --formats"),
    ({"gpu_check": "run", "gpu_images": 0}, "must be >= 1 with gpu_check run"),
])
def test_bad_gpu_check_options_are_named(tmp_path, changes, message):
    with pytest.raises(OptionError, match=message):
        ExportOptions(str(tmp_path / "out"), **changes)


def test_a_software_device_result_is_labelled_and_never_a_gpu_time():
    software = {"artifact": "tflite/icnet_fp16.tflite", "model": "icnet", "format": "tflite",
                "quantization": "fp16", "runtime": "tflite_gpu", "threads": None,
                "status": "ok", "median_s": 2.0, "p90_s": 2.1, "fps": 0.5, "size_bytes": 2**20,
                "vulkan_device": "llvmpipe (software, on the CPU)", "software_device": True}
    cpu = dict(software, artifact="tflite/icnet_fp32.tflite", quantization="fp32",
               runtime="tflite_xnnpack", threads=2, median_s=0.5, software_device=None)
    report = ExportReport(model_name="icnet", version=1, source="m", input_size=[193, 257],
                          models={}, artifacts=[], data={})
    row = next(r for r in report_lib.result_rows({"results": [cpu, software]}, report)
               if "tflite_gpu" in r)
    assert "software Vulkan device (llvmpipe (software, on the CPU))" in row
    assert "not GPU times" in row
    assert [p[3] for p in report_lib._points({"results": [cpu, software]}, report, "size")] == \
        ["tflite_xnnpack"]
    assert report_lib._gpu_result([software], "icnet") is None
