"""deploy.predict: any image size and mode, golden logits, clear errors for bad files."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, golden_path, rel_l2, shared_golden_path
from deploy.predict import run
from icnet.exits import OptionError

QUARTER = golden_path("icnet_quarter_merged_weights.npy")


def predict_cli(*args):
    return subprocess.run([sys.executable, "-m", "deploy.predict", *args], cwd=REPO,
                          capture_output=True, text=True)


def test_save_logits_reproduces_golden(tmp_path):
    weights = shared_golden_path("icnet_cityscapes_merged_weights.npy")
    io = np.load(shared_golden_path("icnet_cityscapes_merged_io.npz"))
    for size in ("193x385", "321x641"):
        image_path = tmp_path / f"{size}.png"
        Image.fromarray(io[f"image_rgb_{size}"]).save(image_path)
        result = predict_cli("--model", weights, "--num_classes", "19", "--filter_scale", "1",
                             "--image", str(image_path), "--output", str(tmp_path / "o.png"),
                             "--save_logits", str(tmp_path / f"{size}.npy"))
        assert result.returncode == 0, result.stderr
        logits = np.load(tmp_path / f"{size}.npy")
        reference = io[f"conv6_cls_{size}"]
        assert rel_l2(logits, reference) <= 1e-5
        assert np.array_equal(logits.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("size,mode", [((480, 640), "L"), ((200, 333), "RGBA"),
                                       ((1024, 2048), "RGB")])
def test_any_size_and_mode_gives_overlay_of_input_size(tmp_path, size, mode):
    rng = np.random.default_rng(0)
    channels = {"L": (), "RGBA": (4,), "RGB": (3,)}[mode]
    pixels = rng.integers(0, 256, (*size, *channels), dtype=np.uint8)
    image_path = tmp_path / "in.png"
    Image.fromarray(pixels, mode).save(image_path)
    class_ids = run(QUARTER, str(image_path), str(tmp_path / "out.png"), num_classes=19,
                    filter_scale=0.25)
    assert class_ids.shape == size
    with Image.open(tmp_path / "out.png") as overlay:
        assert overlay.size == (size[1], size[0]) and overlay.mode == "RGB"


def test_quarter_logits_match_golden(tmp_path):
    io = np.load(golden_path("icnet_quarter_merged_io.npz"))
    Image.fromarray(io["image_rgb_193x385"]).save(tmp_path / "in.png")
    run(QUARTER, str(tmp_path / "in.png"), str(tmp_path / "out.png"),
        save_logits=str(tmp_path / "logits"))  # .npy is appended, as np.save does
    assert rel_l2(np.load(tmp_path / "logits.npy"), io["conv6_cls_193x385"]) <= 1e-5


def test_non_image_file_gives_one_line_error(tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    result = predict_cli("--model", QUARTER, "--image", str(bogus),
                         "--output", str(tmp_path / "o.png"))
    assert result.returncode == 2  # a bad input, refused before any work
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(bogus) in last
    assert not (tmp_path / "o.png").exists()


def test_wrong_class_count_or_scale_is_named(tmp_path):
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(tmp_path / "in.png")
    with pytest.raises(ValueError, match="--num_classes is 150"):
        run(QUARTER, str(tmp_path / "in.png"), str(tmp_path / "o.png"), num_classes=150)
    with pytest.raises(ValueError, match="filter_scale 1"):
        run(QUARTER, str(tmp_path / "in.png"), str(tmp_path / "o.png"), filter_scale=1)
    with pytest.raises(OptionError, match="alpha: must be between 0 and 1, got 1.5") as error:
        run(QUARTER, str(tmp_path / "in.png"), str(tmp_path / "o.png"), alpha=1.5)
    assert error.value.option == "alpha"
    with pytest.raises(OptionError, match="runtime: .*a runtime runs exported artifacts only"):
        run(QUARTER, str(tmp_path / "in.png"), str(tmp_path / "o.png"),
            runtime="tflite_xnnpack")
    artifact = tmp_path / "model.tflite"
    artifact.write_bytes(b"not opened: the flag check comes first")
    with pytest.raises(OptionError,
                       match="filter_scale: .*model.tflite: checked against .npy") as error:
        run(str(artifact), str(tmp_path / "in.png"), str(tmp_path / "o.png"), filter_scale=1)
    assert error.value.option == "filter_scale"
    assert not (tmp_path / "o.png").exists()
    # The binary prints an OptionError as `error: --flag: message` and exits with 2.
    result = predict_cli("--model", QUARTER, "--image", str(tmp_path / "in.png"), "--output",
                         str(tmp_path / "o.png"), "--alpha", "1.5")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --alpha: must be between 0 and 1, got 1.5")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("name,content", [("model.tflite", b"not a flatbuffer"),
                                          ("model.onnx", b"not a protobuf")])
def test_corrupt_artifact_error_names_the_file(tmp_path, name, content):
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(tmp_path / "in.png")
    artifact = tmp_path / name
    artifact.write_bytes(content)
    kind = name.split(".")[1]
    with pytest.raises(ValueError, match=rf"{name}: cannot load this {kind} artifact"):
        run(str(artifact), str(tmp_path / "in.png"), str(tmp_path / "o.png"))
    assert not (tmp_path / "o.png").exists()


def test_unknown_weights_path_lists_every_accepted_kind(tmp_path):
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(tmp_path / "in.png")
    with pytest.raises(FileNotFoundError, match=r"checkpoint prefix, nor an exported artifact "
                                                r"\(a SavedModel version directory"):
        run(str(tmp_path / "nothing"), str(tmp_path / "in.png"), str(tmp_path / "o.png"))
