"""deploy.export: SavedModel signatures and warmup, TFLite and ONNX parity, reports, atomicity.

One tiny export (1/8-width plan, 193x257, every format and quantization) is shared by most
tests; the binary, the kill test and pruning run their own small exports.
"""

import base64
import importlib
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from conftest import REPO
from serving_emulation import read_warmup, rest_inputs
from PIL import Image

from deploy import runtimes
from deploy.export_lib import ExportOptions, default_qat_crop, export
from deploy.layout import QUANTIZATIONS, artifact_format, is_artifact
from deploy.prune_lib import PruneOptions
from deploy.quantize import quantization_spec
from deploy.report import ExportReport
from deploy.runtimes import open_session
from deploy.segment import logits, segment
from icnet import cpu
from icnet.checkpoint import save_model_checkpoint
from icnet.cli import parse_choices
from icnet.config import ICNetConfig
from icnet.data import make_source
from icnet.evaluation import evaluate
from icnet.exits import OptionError
from icnet.inference import Segmenter, load_weights
from icnet.layers import resize_bilinear
from icnet.model import build_icnet
from icnet.weights import model_weights, save_npy_weights

# One worker runs this module: its module-scoped exports are made once (make test runs
# pytest with --dist loadgroup).
pytestmark = pytest.mark.xdist_group("export")

SIZE = (193, 257)
TINY = 0.125


def tiny_model(seed=0, batch_norm=True):
    tf_keras.utils.set_random_seed(seed)
    config = ICNetConfig.from_filter_scale(TINY, 19, batch_norm=batch_norm)
    return config, build_icnet(config, (161, 161))


@pytest.fixture(scope="module")
def sources():
    return (make_source("synthetic", "train", synthetic_size=SIZE),
            make_source("synthetic", "val", synthetic_size=SIZE))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    _, model = tiny_model()
    path = str(tmp_path_factory.mktemp("weights") / "tiny_bn.npy")
    save_npy_weights(model_weights(model), path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, weights_file, sources):
    export_dir = str(tmp_path_factory.mktemp("export"))
    # A tiny random model: int8 keeps 85-95% of its argmax, below the 98% floor (tested below).
    options = ExportOptions(export_dir, input_size=SIZE, quantizations=QUANTIZATIONS, floors=False,
                            parity_images=3, eval_images=3, calibration_images=4, qat_steps=2,
                            qat_batch_size=1)
    report = export(weights_file, options, *sources)
    config, weights = load_weights(weights_file)
    return export_dir, report, Segmenter(config, weights)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(os.path.join(exported[0], "saved_model", "icnet", "1"))


def val_image(sources, index=0):
    image, _, _ = next(iter(sources[1].dataset().skip(index).take(1)))
    return image.numpy()


def png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def verified(report, path, runtime=None):
    """The verification of an artifact under `runtime` (default: its format's first)."""
    artifact = report.artifact(path)
    return artifact.verification(runtime) if runtime else artifact.primary


def reference_miou(model_path, sources, images):
    """The mIoU icnet.evaluation computes for a model: what the export's fp32 Keras reference
    must equal."""
    return evaluate(*load_weights(model_path), sources[1], images)["miou"]


# --------------------------------------------------------------------------------------------
# Layout, report, SavedModel.


def test_layout_and_report(exported, weights_file, sources):
    export_dir, report, _ = exported
    names = {os.path.relpath(os.path.join(root, f), export_dir)
             for root, _, files in os.walk(export_dir) for f in files}
    for quantization in QUANTIZATIONS:
        assert f"tflite/icnet_{quantization}.tflite" in names
    assert {"onnx/icnet.onnx", "onnx/icnet_int8.onnx", "openvino/icnet.xml",
            "openvino/icnet.bin", "openvino/icnet_int8.xml", "openvino/icnet_int8.bin",
            "plan.json", "export_report.json", "export_report.md",
            "saved_model/icnet/1/saved_model.pb",
            "saved_model/icnet/1/assets.extra/tf_serving_warmup_requests",
            "saved_model/icnet/1/assets.extra/plan.json"} <= names
    parent, name = os.path.split(export_dir)
    assert [n for n in os.listdir(parent) if n.startswith(f".{name}.")] == []  # no staging
    on_disk = ExportReport.read(export_dir)
    assert on_disk == report  # the JSON round trip is exact
    assert len(on_disk.artifacts) == 10
    for artifact in on_disk.artifacts:
        assert artifact.size_bytes > 0 and artifact.model == "icnet"
        if artifact.quantization == "int8" and artifact.format in ("onnx", "openvino"):
            assert artifact.details["weight_bits"] == (7 if cpu.int8_saturates() else 8)
        verifying = [r.name for r in runtimes.for_format(artifact.format)
                     if r.verifies and r.available() is None]
        assert [v.runtime for v in artifact.verifications] == verifying, artifact.path
        for v in artifact.verifications:
            for key in ("argmax_agreement", "miou", "max_abs_error", "rel_l2_error"):
                assert getattr(v, key) is not None, (artifact.path, v.runtime, key)
            assert v.parity_images == 3 and v.eval_images == 3
    model = on_disk.models["icnet"]
    assert model.params > 0 and not model.pruned
    assert model.reference.miou == pytest.approx(reference_miou(weights_file, sources, 3),
                                                 abs=1e-6)
    with open(os.path.join(export_dir, "export_report.json")) as f:
        assert json.load(f)["schema_version"] == 2
    with open(os.path.join(export_dir, "export_report.md")) as f:
        text = f.read()
    assert "tflite/icnet_int8.tflite" in text and "GPU delegate" in text
    assert ICNetConfig.load(os.path.join(export_dir, "plan.json")).plan == \
        ICNetConfig.from_filter_scale(TINY, 19).plan


def test_saved_model_cli_lists_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    command = [cli] if os.path.exists(cli) else [
        sys.executable, "-c",
        "from tensorflow.python.tools import saved_model_cli; saved_model_cli.main()"]
    out = subprocess.run(
        [*command, "show", "--all", "--dir",
         os.path.join(exported[0], "saved_model", "icnet", "1")],
        capture_output=True, text=True, check=True).stdout
    default = out[out.index("signature_def['serving_default']"):]
    assert "inputs['images']" in default and "DT_UINT8" in default
    assert "shape: (-1, 193, 257, 3)" in default
    assert "outputs['class_ids']" in default and "outputs['logits']" in default
    assert "shape: (-1, 49, 65, 19)" in default
    bytes_sig = out[out.index("signature_def['serve_image_bytes']"):]
    assert "inputs['image_bytes']" in bytes_sig and "DT_STRING" in bytes_sig
    assert "outputs['class_ids']" in bytes_sig and "outputs['image_size']" in bytes_sig


def run_rest(loaded, signature, body):
    function = loaded.signatures[signature]
    inputs = rest_inputs(json.loads(json.dumps(body)),
                                 function.structured_input_signature[1])
    return {k: v.numpy() for k, v in function(**{k: tf.constant(v) for k, v in
                                                 inputs.items()}).items()}


def test_rest_requests_match_segmenter(exported, loaded, sources):
    _, _, segmenter = exported
    image = val_image(sources)
    expected, _ = segmenter.segment(image)
    by_tensor = run_rest(loaded, "serving_default", {"instances": [image.tolist()]})
    assert by_tensor["class_ids"].shape == (1, *SIZE)
    assert np.array_equal(by_tensor["class_ids"][0], expected)
    assert np.allclose(by_tensor["logits"], segmenter.logits(image), atol=1e-4)
    body = {"instances": [{"b64": base64.b64encode(png_bytes(image)).decode()}]}
    by_bytes = run_rest(loaded, "serve_image_bytes", body)
    assert np.array_equal(by_bytes["class_ids"][0], expected)
    assert by_bytes["image_size"].tolist() == [list(SIZE)]
    columnar = run_rest(loaded, "serve_image_bytes", {"inputs": [body["instances"][0]]})
    assert np.array_equal(columnar["class_ids"], by_bytes["class_ids"])


def test_bytes_of_other_sizes_are_resized_and_mapped_back(exported, loaded, sources):
    _, _, segmenter = exported
    small = np.asarray(Image.fromarray(val_image(sources, 1)).resize((300, 150)))
    large = val_image(sources, 2)
    out = loaded.signatures["serve_image_bytes"](
        image_bytes=tf.constant([png_bytes(small), png_bytes(large)]))
    assert out["image_size"].numpy().tolist() == [[150, 300], list(SIZE)]
    class_ids = out["class_ids"].numpy()
    assert class_ids.shape == (2, SIZE[0], 300)  # the batch's largest height and width
    model = segmenter.model_for(SIZE)
    resized = tf.image.resize(small.astype(np.float32), SIZE, method="bilinear")
    logits = model(resized[None])["conv6_cls"]
    expected = tf.argmax(resize_bilinear(logits, (150, 300), True), -1)[0].numpy()
    assert np.array_equal(class_ids[0, :150, :300], expected)
    assert (class_ids[0, 150:] == 255).all() and (class_ids[1, :, SIZE[1]:] == 255).all()
    assert np.array_equal(class_ids[1, :, :SIZE[1]], segmenter.segment(large)[0])


def test_warmup_file_holds_predict_requests(exported, loaded):
    path = os.path.join(exported[0], "saved_model", "icnet", "1", "assets.extra",
                        "tf_serving_warmup_requests")
    requests = read_warmup(path)
    assert [r.model_spec.signature_name for r in requests] == ["serving_default",
                                                              "serve_image_bytes"]
    for request in requests:
        assert request.model_spec.name == "icnet"
        inputs = {name: tf.constant(tf.make_ndarray(proto))
                  for name, proto in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert outputs["class_ids"].dtype == tf.uint8


def _png_claiming(width, height):
    data = png_bytes(np.zeros((4, 4, 3), np.uint8))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:]


def _jpeg_claiming(width, height):
    data = bytearray(jpeg_bytes(np.zeros((8, 8, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("data,message", [
    (b"", "not a JPEG or PNG"),
    (b"definitely not an image", "not a JPEG or PNG"),
    (b"GIF89a" + b"\0" * 40, "not a JPEG or PNG"),
    (b"\x89PNG\r\n\x1a\n", "not a JPEG or PNG"),  # truncated header
    (None, "too large"),  # PNG header claiming 100000 x 100000
    ("jpeg", "too large"),  # JPEG SOF claiming 60000 x 60000
    ("corrupt", ""),  # a valid PNG header followed by garbage
])
def test_bad_image_bytes_fail_cleanly(loaded, data, message):
    if data is None:
        data = _png_claiming(100_000, 100_000)
    elif data == "jpeg":
        data = _jpeg_claiming(60_000, 60_000)
    elif data == "corrupt":
        data = png_bytes(np.zeros((40, 40, 3), np.uint8))[:40] + b"\x13" * 200
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(tf.errors.InvalidArgumentError, match=message or None):
        loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([data]))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 500  # the claimed images would take 28 GB / 10 GB
    # The process is fine and the signature still works.
    good = png_bytes(np.full((20, 30, 3), 128, np.uint8))
    out = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([good]))
    assert out["class_ids"].shape == (1, 20, 30)


@pytest.mark.parametrize("images", [
    np.zeros((1, *SIZE, 3), np.float32),  # wrong dtype
    np.zeros((*SIZE, 3), np.uint8),  # wrong rank
    np.zeros((1, 97, 129, 3), np.uint8),  # wrong size
    np.zeros((1, *SIZE, 4), np.uint8),  # RGBA
])
def test_bad_image_tensors_fail_cleanly(loaded, images):
    # (A loaded signature, like TF Serving, does not check shapes before running the graph:
    # without the in-graph check a wrong rank aborts the process inside the conv kernel.)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)) as error:
        loaded.signatures["serving_default"](images=tf.constant(images))
    if images.dtype == np.uint8:
        assert "not compatible with expected shape [?,193,257,3]" in str(error.value)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible"):
        loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(b""))  # rank 0
    out = loaded.signatures["serving_default"](images=tf.zeros((1, *SIZE, 3), tf.uint8))
    assert out["class_ids"].shape == (1, *SIZE)


def test_rest_body_errors_name_the_problem(loaded):
    specs = loaded.signatures["serving_default"].structured_input_signature[1]
    with pytest.raises(ValueError, match="instances"):
        rest_inputs({}, specs)
    with pytest.raises(ValueError, match="shape"):
        rest_inputs({"instances": [[[1, 2, 3]]]}, specs)


# --------------------------------------------------------------------------------------------
# TFLite and ONNX.


def test_float_artifacts_match_keras(exported):
    _, report, _ = exported
    for path in ("saved_model/icnet/1", "onnx/icnet.onnx", "openvino/icnet.xml",
                 "tflite/icnet_fp32.tflite", "tflite/icnet_fp16.tflite"):
        assert verified(report, path).argmax_agreement >= 0.999, path
    for path in ("saved_model/icnet/1", "onnx/icnet.onnx", "openvino/icnet.xml",
                 "tflite/icnet_fp32.tflite"):
        assert verified(report, path).rel_l2_error < 1e-5, path
    assert verified(report, "tflite/icnet_fp16.tflite").rel_l2_error < 1e-2
    for path in ("tflite/icnet_dynamic.tflite", "tflite/icnet_int8.tflite",
                 "tflite/icnet_qat.tflite", "onnx/icnet_int8.onnx", "openvino/icnet_int8.xml"):
        assert verified(report, path).argmax_agreement > 0.85, path
    # bf16 runtimes (where this CPU has native bf16): bf16 arithmetic, close to float32.
    for path, runtime in (("saved_model/icnet/1", "tf_cpu_bf16"),
                          ("openvino/icnet.xml", "openvino_cpu_bf16")):
        checked = verified(report, path, runtime)
        if runtimes.get(runtime).available() is None:
            assert 1e-5 < checked.rel_l2_error < 0.03 and checked.argmax_agreement > 0.95
        else:
            assert checked is None


def test_tflite_gpu_verdicts_and_integer_inputs(exported):
    export_dir, report, _ = exported
    for quantization in ("fp32", "fp16"):
        gpu = report.artifact(f"tflite/icnet_{quantization}.tflite").gpu
        assert (gpu.method, gpu.compatible, gpu.problems) == ("analyzer", True, [])
    from ai_edge_litert.interpreter import Interpreter
    for quantization in QUANTIZATIONS:  # every quantization carries the signature
        interpreter = Interpreter(os.path.join(export_dir, f"tflite/icnet_{quantization}.tflite"))
        assert interpreter.get_signature_list() == {
            "serving_default": {"inputs": ["images"], "outputs": ["logits"]}}, quantization
        assert [d["name"] for d in interpreter.get_output_details()] == ["logits"]
        session = open_session(os.path.join(export_dir, f"tflite/icnet_{quantization}.tflite"))
        assert session.info["signature"] is True
    for quantization in ("int8", "qat"):
        interpreter = Interpreter(os.path.join(export_dir, f"tflite/icnet_{quantization}.tflite"))
        details = interpreter.get_input_details()[0]
        assert details["dtype"] == np.uint8
        assert details["quantization"] == (1.0, 0)  # raw pixels
        floats = [t["name"] for t in interpreter.get_tensor_details()
                  if t["dtype"] == np.float32]
        assert len(floats) == 1, (quantization, floats)  # only the dequantized logits


def test_tflite_reference_kernels_agree_with_xnnpack(exported, sources):
    export_dir = exported[0]
    image = val_image(sources)
    for quantization, agreement in (("fp32", 0.999), ("int8", 0.95)):  # int8 rounds differently
        path = os.path.join(export_dir, f"tflite/icnet_{quantization}.tflite")
        fast = logits(open_session(path, "tflite_xnnpack", 2), image)
        reference = logits(open_session(path, "tflite_reference", 2), image)
        assert np.mean(fast.argmax(-1) == reference.argmax(-1)) >= agreement


def test_onnx_is_valid_and_matches_tensorflow(exported, loaded, sources):
    import onnx
    path = os.path.join(exported[0], "onnx", "icnet.onnx")
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path)
    resizes = [n for n in model.graph.node if n.op_type == "Resize"]
    assert resizes and all(len(n.input) == 4 and n.input[3] for n in resizes)  # explicit sizes
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("images", "tensor(uint8)", ["batch", *SIZE, 3])
    images = np.stack([val_image(sources, i) for i in range(2)])
    logits, class_ids = session.run(["logits", "class_ids"], {"images": images})
    expected = loaded.signatures["serving_default"](images=tf.constant(images))
    assert np.allclose(logits, expected["logits"].numpy(), atol=1e-4)
    assert np.mean(class_ids == expected["class_ids"].numpy()) > 0.999


def test_onnx_resize_handler_gives_exact_sizes():
    """The sizes where float scales lose a pixel (17 -> 33, 33 -> 17, ...), every mode."""
    import onnxruntime as ort

    from deploy import onnx_writer

    @tf.function(input_signature=[tf.TensorSpec([None, 17, 33, 4], tf.float32)])
    def resizes(x):
        return {"up": resize_bilinear(x, (33, 65), align_corners=True),
                "down": resize_bilinear(x, (9, 17), align_corners=True),
                "legacy": resize_bilinear(x, (25, 40), align_corners=False),
                "half": tf.image.resize(x, (31, 63), method="bilinear")}

    model = onnx_writer.convert(resizes, opset=13)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.RandomState(0).rand(2, 17, 33, 4).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
    for name, value in resizes(tf.constant(x)).items():
        assert got[name].shape == value.shape, name
        assert np.allclose(got[name], value.numpy(), atol=1e-5), name


# --------------------------------------------------------------------------------------------
# Runners (deploy.predict's API) and quantization names.


def test_sessions_segment_like_the_checkpoint(exported, sources):
    export_dir, _, segmenter = exported
    image = val_image(sources, 3)
    expected, _ = segmenter.segment(image)
    for relative, kind in (("saved_model/icnet", "saved_model"),
                           ("saved_model/icnet/1", "saved_model"),
                           ("tflite/icnet_fp32.tflite", "tflite"), ("onnx/icnet.onnx", "onnx")):
        path = os.path.join(export_dir, relative)
        assert artifact_format(path) == kind and is_artifact(path)
        session = open_session(path, threads=2)
        assert session.input_size == SIZE
        class_ids, probabilities, small = segment(session, image, with_logits=True)
        assert probabilities.shape == (*SIZE, 19)
        assert np.mean(class_ids == expected) >= 0.9999, relative
        assert np.allclose(small, segmenter.logits(image), atol=1e-4)
    # A smaller image is padded like Segmenter pads it (to the same 32k+1 size here).
    small = image[:180, :250]
    class_ids, _ = segment(open_session(os.path.join(export_dir, "onnx/icnet.onnx")), small)
    assert class_ids.shape == (180, 250)
    assert np.mean(class_ids == segmenter.segment(small)[0]) > 0.99
    assert not is_artifact(os.path.join(export_dir, "plan.json"))
    with pytest.raises(ValueError, match="not an exported artifact"):
        open_session(os.path.join(export_dir, "plan.json"))
    with pytest.raises(ValueError, match="a tflite artifact; runtime onnxruntime_cpu runs onnx"):
        open_session(os.path.join(export_dir, "tflite/icnet_fp32.tflite"), "onnxruntime_cpu")


def test_a_runtime_registered_in_one_line_is_verified_by_the_export(tmp_path, weights_file,
                                                                    sources, monkeypatch):
    monkeypatch.setattr(runtimes, "REGISTRY", dict(runtimes.REGISTRY))
    monkeypatch.delitem(sys.modules, "dummy_runtime", raising=False)
    importlib.import_module("dummy_runtime")  # registers dummy_onnx_cpu, in one line
    report = export(weights_file, _small_options(str(tmp_path / "out"), parity_images=1,
                                                 eval_images=1), *sources)
    dummy = verified(report, "onnx/icnet.onnx", "dummy_onnx_cpu")
    assert dummy.parity_images == 1 and dummy.argmax_agreement >= 0.999
    assert dummy.miou == pytest.approx(verified(report, "onnx/icnet.onnx").miou)


def test_predict_gives_the_checkpoint_overlay_from_every_fp32_artifact(exported, weights_file,
                                                                       sources, tmp_path):
    export_dir = exported[0]
    image_path = tmp_path / "scene.png"
    Image.fromarray(val_image(sources, 2)).save(image_path)
    overlays = {}
    for name, weights in (("checkpoint", weights_file),
                          ("saved_model", os.path.join(export_dir, "saved_model/icnet")),
                          ("tflite", os.path.join(export_dir, "tflite/icnet_fp32.tflite")),
                          ("onnx", os.path.join(export_dir, "onnx/icnet.onnx"))):
        output = tmp_path / f"{name}.png"
        result = subprocess.run([sys.executable, "-m", "deploy.predict", "--model", weights,
                                 "--image", str(image_path), "--output", str(output)],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        overlays[name] = np.asarray(Image.open(output))
    for name in ("saved_model", "tflite", "onnx"):
        same = np.all(overlays[name] == overlays["checkpoint"], axis=-1).mean()
        assert same >= 0.999, name


def test_quantization_names_are_a_closed_set():
    assert parse_choices("int8, fp32", QUANTIZATIONS, "quantize") == ("fp32", "int8")
    with pytest.raises(ValueError, match="unknown quantization 'int4'"):
        quantization_spec("int4")
    with pytest.raises(OptionError, match=r"quantize: unknown \['bf16'\]"):
        parse_choices("fp32,bf16", QUANTIZATIONS, "quantize")
    with pytest.raises(OptionError, match="quantize: unknown empty list"):
        parse_choices(" , ", QUANTIZATIONS, "quantize")


def test_qat_quantize_configs():
    from deploy.quantize import quantization_aware_model
    config, _ = tiny_model(batch_norm=False)
    qat = quantization_aware_model(build_icnet(config, SIZE))
    configs = {layer.layer.name: type(layer.quantize_config).__name__
               for layer in qat.layers if hasattr(layer, "quantize_config")}
    assert configs["preprocess"] == "OutputQuantizeConfig"
    for name in ("data_sub2", "conv5_3_pool6", "conv5_3_pool6_interp", "sub12_sum_interp"):
        assert configs[name] == "PassThroughQuantizeConfig", name
    assert configs["conv1_1_3x3_s2"] == "ConvKernelQuantizeConfig"  # conv -> ReLU keeps kernel
    assert configs["conv2_1_1x1_increase"] == "Default8BitConvQuantizeConfig"
    assert configs["conv2_1"] == "NoOpQuantizeConfig"  # Add -> ReLU
    conv = qat.get_layer("quant_conv1_1_3x3_s2")
    assert any("kernel_min" in w.name for w in conv.weights)
    with pytest.raises(ValueError, match="BN-merged"):
        quantization_aware_model(build_icnet(tiny_model()[0], SIZE))


# --------------------------------------------------------------------------------------------
# Atomicity and the binary.


def _small_options(export_dir, **changes):
    return ExportOptions(export_dir, **{"input_size": SIZE, "formats": ("onnx",),
                                        "parity_images": 0, "eval_images": 0,
                                        "calibration_images": 0, "floors": False, **changes})


def test_failed_export_leaves_nothing_and_versions_are_kept(tmp_path, weights_file, sources,
                                                             monkeypatch):
    export_dir = str(tmp_path / "out")
    options = _small_options(export_dir, formats=("saved_model",))
    version_dir = os.path.join(export_dir, "saved_model", "icnet", "1")

    def fail(*args):
        raise RuntimeError("injected failure")

    with monkeypatch.context() as patch:
        patch.setattr(ExportReport, "write", fail)
        with pytest.raises(RuntimeError, match="injected"):
            export(weights_file, options, *sources)
    assert os.listdir(tmp_path) == []  # no export, no staging left beside it
    export(weights_file, options, *sources)
    stamp = os.path.getmtime(os.path.join(version_dir, "saved_model.pb"))
    with pytest.raises(FileExistsError, match="exists and is not empty; pass --overwrite"):
        export(weights_file, options, *sources)
    overwrite = _small_options(export_dir, formats=("saved_model",), overwrite=True)
    with monkeypatch.context() as patch:
        patch.setattr(ExportReport, "write", fail)
        with pytest.raises(RuntimeError, match="injected"):
            export(weights_file, overwrite, *sources)
    assert os.path.getmtime(os.path.join(version_dir, "saved_model.pb")) == stamp
    assert sorted(os.listdir(export_dir)) == ["export_report.json", "export_report.md",
                                              "plan.json", "saved_model"]
    assert os.listdir(tmp_path) == ["out"]
    version_2 = _small_options(export_dir, formats=("saved_model",), version=2, overwrite=True)
    export(weights_file, version_2, *sources)
    assert sorted(os.listdir(os.path.join(export_dir, "saved_model", "icnet"))) == ["1", "2"]
    assert os.path.getmtime(os.path.join(version_dir, "saved_model.pb")) == stamp  # kept as is
    # An --overwrite export replaces the export: what it does not write goes, even other
    # SavedModel versions once it writes no SavedModel of that model.
    onnx_only = _small_options(export_dir, model_name="other", overwrite=True)
    report = export(weights_file, onnx_only, *sources)
    assert [a.path for a in report.artifacts] == ["onnx/other.onnx"]
    assert sorted(os.listdir(export_dir)) == ["export_report.json", "export_report.md", "onnx",
                                              "plan.json"]


def test_overwrite_replaces_only_exports_and_never_follows_symlinks(tmp_path, weights_file,
                                                                     sources):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "other_fp32.tflite").write_bytes(b"kept")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an export"):
        export(weights_file, _small_options(str(notes), overwrite=True), *sources)
    assert (notes / "todo.txt").read_text() == "keep me"
    export_dir = tmp_path / "out"
    export(weights_file, _small_options(str(export_dir)), *sources)
    os.symlink(shared, export_dir / "tflite")
    export(weights_file, _small_options(str(export_dir), overwrite=True), *sources)
    assert sorted(os.listdir(export_dir)) == ["export_report.json", "export_report.md", "onnx",
                                              "plan.json"]
    assert (shared / "other_fp32.tflite").read_bytes() == b"kept"


def _export_command(model_dir, export_dir):
    return [sys.executable, "-m", "deploy.export", "--model", model_dir, "--export_dir",
            export_dir, "--input_size", "193x257", "--formats", "saved_model,tflite",
            "--quantize", "fp32", "--parity_images", "1", "--eval_images", "1",
            "--calibration_images", "0"]


@pytest.mark.parametrize("field,value,message", [
    ("onnx_opset", 99, "onnx_opset: must be 13-18, got 99"),
    ("threads", -4, r"threads: must be >= 1 \(or unset\), got -4"),
    ("max_image_pixels", 0, r"max_image_pixels: must be at least 4096 \(the 64x64 warmup PNG\)"),
    ("qat_learning_rate", -1.0, "qat_learning_rate: must be > 0, got -1.0"),
    ("model_name", "icnet_int8", "ends in _int8, which artifact file names reserve"),
    ("qat_crop_size", (100, 100), "qat_crop_size: must be at least 161x161"),
])
def test_bad_export_options_are_named(tmp_path, field, value, message):
    with pytest.raises(OptionError, match=message):
        _small_options(str(tmp_path), **{field: value})


@pytest.mark.parametrize("extra,message", [
    (("--keep", "0.3", "--learning_rate", "1e-3"),
     "error: --keep, --learning_rate: only used with --prune"),
    (("--qat_steps", "5"),
     "error: --qat_steps: only used with qat in --quantize and tflite in --formats"),
    (("--input_size", "100x161"),
     "error: --input_size: 100x161 is smaller than the smallest input ICNet takes, 161x161"),
    (("--prune", "--keep", "0.75,0.9"),
     "error: --keep: keeps must not increase (widths only shrink), got [0.75, 0.9]"),
])
def test_flags_that_would_be_ignored_or_too_small_are_refused(tmp_path, extra, message):
    command = [*_export_command(str(tmp_path / "model"), str(tmp_path / "out")), *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_binary_killed_mid_export_leaves_no_version(tmp_path):
    config, model = tiny_model(seed=1)
    model_dir = str(tmp_path / "model")
    save_model_checkpoint(model, config, model_dir)
    export_dir = str(tmp_path / "out")
    process = subprocess.Popen(_export_command(model_dir, export_dir), cwd=REPO,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    try:
        for line in process.stderr:
            if "export: wrote saved_model" in line or time.time() > deadline:
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(export_dir)
    staged = [n for n in os.listdir(tmp_path) if n.startswith(".out.staging-")]
    assert staged and os.path.isfile(os.path.join(tmp_path, staged[0], "saved_model", "icnet",
                                                  "1", "saved_model.pb"))
    # A rerun removes the dead run's staging dir and publishes a complete export.
    result = subprocess.run(_export_command(model_dir, export_dir), cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| `tflite/icnet_fp32.tflite` |" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["model", "out"]
    assert os.path.isfile(os.path.join(export_dir, "saved_model", "icnet", "1", "assets.extra",
                                       "tf_serving_warmup_requests"))
    report = ExportReport.read(export_dir)
    assert report.source == model_dir
    assert verified(report, "tflite/icnet_fp32.tflite").argmax_agreement >= 0.999
    again = subprocess.run(_export_command(model_dir, export_dir), cwd=REPO,
                           capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_export_with_pruning(tmp_path, weights_file, sources):
    options = _small_options(str(tmp_path / "out"), eval_images=1, parity_images=1,
                             formats=("saved_model", "tflite", "onnx"), gpu_check="none")
    report = export(weights_file, options, *sources, prune=PruneOptions(schedule=(0.5,)))
    prune = report.prune
    assert prune.final.measure.params < prune.original.params
    # Both models are evaluated by the export itself (the pruning does not repeat it), and
    # the pruning's report takes their numbers.
    assert prune.original.miou == report.models["icnet_unpruned"].reference.miou
    assert prune.final.measure.miou == report.models["icnet"].reference.miou
    out = tmp_path / "out"
    pruned_dir = str(out / "pruned_model")
    assert report.models["icnet_unpruned"].reference.miou == pytest.approx(
        reference_miou(weights_file, sources, 1), abs=1e-6)
    assert report.models["icnet"].reference.miou == pytest.approx(
        reference_miou(pruned_dir, sources, 1), abs=1e-6)
    pruned = ICNetConfig.load(str(out / "pruned_model" / "plan.json"))
    exported = ICNetConfig.load(str(out / "plan.json"))
    assert exported.plan == pruned.plan != ICNetConfig.from_filter_scale(TINY, 19).plan
    assert report.models["icnet"].params == prune.final.measure.params
    assert report.models["icnet_unpruned"].params == prune.original.params
    assert report.pruned_model() == "icnet" and report.full_width_model() == "icnet_unpruned"
    # The source model, fp32 in every format, beside the pruned one; each verified against
    # its own Keras model.
    unpruned = [a for a in report.artifacts if a.model == "icnet_unpruned"]
    assert {a.path for a in unpruned} == {"saved_model/icnet_unpruned/1",
                                          "onnx/icnet_unpruned.onnx",
                                          "tflite/icnet_unpruned_fp32.tflite"}
    for artifact in report.artifacts:
        assert os.path.exists(out / artifact.path)
        if artifact.quantization == "fp32":
            assert artifact.primary.argmax_agreement >= 0.999, artifact.path
    text = (out / "export_report.md").read_text()
    assert "## Pruning" in text and "| icnet_unpruned | no |" in text
    # Exporting the pruned model directory later marks the model pruned too.
    again = export(pruned_dir, _small_options(str(tmp_path / "again")), *sources)
    assert again.models["icnet"].pruned and again.pruned_model() == "icnet"
    plain = export(weights_file, _small_options(str(tmp_path / "plain")), *sources)
    assert not plain.models["icnet"].pruned and plain.full_width_model() == "icnet"
    # An export never replaces the model it reads, nor writes into its directory.
    for target in (out, out / "pruned_model"):
        with pytest.raises(OptionError, match="would replace the source model"):
            export(pruned_dir, _small_options(str(target), overwrite=True), *sources)
    assert os.path.isfile(os.path.join(pruned_dir, "plan.json"))


def test_export_with_pruning_only_the_pruned_model(tmp_path, weights_file, sources):
    options = _small_options(str(tmp_path / "out"), eval_images=1, export_unpruned=False)
    report = export(weights_file, options, *sources, prune=PruneOptions(schedule=(0.5,)))
    assert [a.path for a in report.artifacts] == ["onnx/icnet.onnx"]
    assert list(report.models) == ["icnet"]
    # The pruning measured the mIoU before and after.
    assert report.prune.original.miou is not None and report.prune.final.measure.miou == \
        pytest.approx(report.models["icnet"].reference.miou, abs=1e-6)
    assert "| before (the source) |" in (tmp_path / "out" / "export_report.md").read_text()


def test_qat_trained_at_a_crop_exports_at_the_export_size(tmp_path, weights_file, sources):
    """QAT fine-tunes at a crop (another 32k+1 size) and carries weights and ranges over to
    the export-size model; a second QAT model in the process gets TFMOT layer names with new
    suffixes, which must not matter."""
    assert default_qat_crop((1025, 2049)) == (513, 1025)
    assert default_qat_crop((193, 257)) == (193, 257)  # half would be below 161
    options = _small_options(str(tmp_path / "out"), formats=("tflite",), quantizations=("qat",),
                             input_size=(225, 289), qat_crop_size=(193, 257), qat_steps=1,
                             qat_batch_size=1, calibration_images=2, gpu_check="none")
    report = export(weights_file, options, *sources)
    assert report.qat.crop_size == [193, 257] and report.qat.loss is not None
    session = open_session(str(tmp_path / "out" / "tflite" / "icnet_qat.tflite"))
    assert session.input_size == (225, 289)


def test_an_artifact_below_its_floor_fails_the_export_and_the_report_marks_it(tmp_path,
                                                                             weights_file):
    """int8 calibrated on blank images loses its argmax: the export exits 3 naming it, and the
    export is still complete, with a readable report marking it."""
    from icnet.data.synthetic import write_cityscapes_layout
    from icnet.weights import assign_weights
    scenes = tmp_path / "scenes"
    write_cityscapes_layout(str(scenes), 0, 2, *SIZE)
    images = sorted((scenes / "leftImg8bit" / "val" / "synth").iterdir())
    labels = scenes / "gtFine" / "val" / "synth"
    (tmp_path / "val.txt").write_text("\n".join(
        f"{image} {labels / image.name.replace('leftImg8bit', 'gtFine_labelTrainIds')}"
        for image in images))
    blank = tmp_path / "blank"
    blank.mkdir()
    for index in range(4):
        Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(blank / f"{index}.png")
        Image.fromarray(np.zeros(SIZE, np.uint8)).save(blank / f"{index}_label.png")
    (tmp_path / "train.txt").write_text("\n".join(
        f"{blank / f'{i}.png'} {blank / f'{i}_label.png'}" for i in range(4)))
    # A list dataset's files come from the model's record (deploy.export has no list flags).
    config, weights = load_weights(weights_file)
    model = build_icnet(config, (161, 161))
    assign_weights(model, weights)
    model_dir = tmp_path / "model"
    save_model_checkpoint(model, config, str(model_dir))
    (model_dir / "train_summary.json").write_text(json.dumps({"data": {
        "dataset": "list", "train_list": str(tmp_path / "train.txt"),
        "val_list": str(tmp_path / "val.txt"), "num_classes": 19}}))
    command = [sys.executable, "-m", "deploy.export", "--model", str(model_dir), "--export_dir",
               str(tmp_path / "out"), "--input_size", "193x257", "--formats", "tflite",
               "--quantize", "fp32,int8", "--parity_images", "2", "--eval_images", "0",
               "--calibration_images", "4", "--gpu_check", "none", "--min_agreement", "0.8"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    failed = result.stderr.split("below the accuracy floors")[1]
    assert "| `tflite/icnet_int8.tflite` | tflite_xnnpack | argmax agreement" in failed
    assert "tflite/icnet_fp32.tflite" not in failed
    report = ExportReport.read(str(tmp_path / "out"))
    int8 = verified(report, "tflite/icnet_int8.tflite")
    assert int8.below_floor.startswith("argmax agreement") and not int8.passed
    assert int8.argmax_agreement < 0.8 and verified(report, "tflite/icnet_fp32.tflite").passed
    assert "**FAILED**" in (tmp_path / "out" / "export_report.md").read_text()


def test_binaries_alone_read_flags_and_export_keeps_about_thirty():
    """Library modules never read absl FLAGS (only the binaries, the modules that call
    app.run), and deploy.export defines about 30 flags of its own (at most 33)."""
    readers = []
    for package in ("icnet", "deploy", "benchmarks"):
        for root, _, names in os.walk(os.path.join(REPO, package)):
            for name in names:
                if name.endswith(".py"):
                    text = Path(root, name).read_text()
                    if "FLAGS" in text.replace("ISA_FLAGS", "") and "app.run(" not in text:
                        readers.append(os.path.relpath(os.path.join(root, name), REPO))
    assert readers == []
    help_text = subprocess.run([sys.executable, "-m", "deploy.export", "--helpfull"], cwd=REPO,
                               capture_output=True, text=True, timeout=120).stdout
    own, section = [], None
    for line in help_text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            section = line
        elif line.startswith("  --") and section and ("deploy/export.py" in section
                                                      or "common_flags" in section):
            own.append(line.split()[0].split("=")[0])
    assert 20 <= len(own) <= 33, own


def test_every_tflite_carries_segmenter_metadata_and_mediapipe_runs_it(exported):
    """MediaPipe's ImageSegmenter (its own environment, make mediapipe-env) runs every exported
    .tflite as it is; its category masks agree with the kit's class ids."""
    from deploy.tflite_metadata import read_metadata
    from icnet.data.labels import CITYSCAPES_CLASS_NAMES
    export_dir, report, _ = exported
    for quantization in QUANTIZATIONS:
        path = os.path.join(export_dir, f"tflite/icnet_{quantization}.tflite")
        with open(path, "rb") as f:
            metadata = read_metadata(f.read(), path)
        assert metadata.labels == CITYSCAPES_CLASS_NAMES and metadata.name == "icnet"
        integer = quantization in ("int8", "qat")
        assert metadata.normalization == (None if integer else ((0.0,), (1.0,))), quantization
        check = report.artifact(f"tflite/icnet_{quantization}.tflite").mediapipe
        assert check.agreement is not None, f"{check.note} (make test makes the environment)"
        assert check.images == 3
        assert check.agreement >= (0.99 if integer or quantization == "dynamic" else 0.999), \
            (quantization, check.agreement)
    text = (Path(export_dir) / "export_report.md").read_text()
    assert "% of 3 masks" in text


def test_metadata_bad_input_gets_one_clear_message(exported):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from deploy.tflite_metadata import add_metadata, model_part, read_metadata
    with open(os.path.join(exported[0], "tflite/icnet_fp32.tflite"), "rb") as f:
        content = f.read()
    # The same model without its metadata entry (what a converter alone writes).
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_part(content), 0))
    model.metadata = [m for m in model.metadata if m.name.decode() != "TFLITE_METADATA"]
    builder = flatbuffers.Builder(len(content))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ValueError, match="bare.tflite: no TFLite metadata"):
        read_metadata(bytes(builder.Output()), "bare.tflite")
    with pytest.raises(ValueError, match="3 labels for a model with 19 classes"):
        add_metadata(content, ("road", "sky", "car"), "icnet", "x", "1")
    again = add_metadata(content, [f"c{i}" for i in range(19)], "icnet", "x", "2")
    assert read_metadata(again).labels[0] == "c0" and read_metadata(again).version == "2"
    buffers = [schema.Model.GetRootAs(model_part(c), 0).BuffersLength() for c in (content, again)]
    assert buffers[0] == buffers[1]  # the metadata replaced, not added twice
