r"""Segments one image and writes a color overlay.

Example:
  python -m deploy.predict --model icnet_cityscapes_train_30k.npy --num_classes 19 \
      --filter_scale 1 --image street.png --output street_overlay.png --save_logits logits.npy
  python -m deploy.predict --model exports/icnet/tflite/icnet_int8.tflite \
      --runtime tflite_xnnpack --image street.png --output overlay.png

`--model` is a reference `.npy` (BN-merged or bnnomerge), a training checkpoint (a model
directory or checkpoint prefix with plan.json beside it), or an exported artifact: a SavedModel
directory, a `.tflite` or an `.onnx` file from deploy.export, run under `--runtime` (default:
the format's first runtime). Any image size works: the image is padded to the next 32k+1
(artifacts: to their fixed input size; larger images are resized), and the overlay has the
input's size. `--save_logits` writes the `conv6_cls` logits (NHWC float32, batch 1, 1/4 of the
padded size, before upsampling).
"""

from __future__ import annotations

import io

import numpy as np
from absl import app, flags

from deploy.layout import is_artifact
from deploy.runtimes import open_session
from deploy.segment import segment
from icnet import exits
from icnet.checkpoint import latest_checkpoint
from icnet.data.labels import palette_for
from icnet.fileio import atomic_write_bytes
from icnet.image_io import overlay, read_rgb, write_png
from icnet.inference import Segmenter, load_weights

flags.DEFINE_string("model", None, "Reference .npy, checkpoint (model dir or prefix), or an "
                    "exported SavedModel dir, .tflite or .onnx file.")
flags.DEFINE_string("runtime", None, "Runtime of an exported artifact (default: its format's "
                    "first; see benchmarks.latency for the names).")
flags.DEFINE_integer("num_classes", None, "Class count; checked against the model if given.")
flags.DEFINE_float("filter_scale", None, "1 (half width) or 2 (full width); checked against "
                   ".npy weights or a checkpoint if given.")
flags.DEFINE_string("image", None, "Input image (PNG/JPEG, any size, RGB/gray/RGBA).")
flags.DEFINE_string("output", None, "Output overlay PNG.")
flags.DEFINE_string("save_logits", None, "Optional .npy path for the conv6_cls logits "
                    "(.npy is appended if missing).")
flags.DEFINE_float("alpha", 0.5, "Opacity of the class colors in the overlay (0-1).")
flags.mark_flags_as_required(["model", "image", "output"])
FLAGS = flags.FLAGS


def run(model: str, image_path: str, output: str, num_classes: int | None = None,
        filter_scale: float | None = None, save_logits: str | None = None,
        alpha: float = 0.5, runtime: str | None = None) -> np.ndarray:
    """Segments `image_path`, writes the overlay (and logits); returns the class ids."""
    if not 0.0 <= alpha <= 1.0:
        raise exits.OptionError("alpha", f"must be between 0 and 1, got {alpha}")
    image = read_rgb(image_path)
    if is_artifact(model):
        if filter_scale is not None:
            raise exits.OptionError("filter_scale", f"{model}: checked against .npy weights "
                                    f"and checkpoints only; an exported artifact has fixed "
                                    f"widths")
        class_ids, _, logits = segment(open_session(model, runtime), image, with_logits=True)
        if num_classes is not None and logits.shape[-1] != num_classes:
            raise exits.OptionError("num_classes", f"{model} has {logits.shape[-1]} classes, "
                                                   f"not {num_classes}")
    else:
        if runtime is not None:
            raise exits.OptionError("runtime", f"{model}: a runtime runs exported artifacts "
                                               f"only")
        if not model.endswith(".npy") and not latest_checkpoint(model):
            raise FileNotFoundError(f"{model}: not a .npy file, a model directory with a "
                                    f"checkpoint, a checkpoint prefix, nor an exported artifact "
                                    f"(a SavedModel version directory, a .tflite or an .onnx "
                                    f"file)")
        config, params = load_weights(model, num_classes, filter_scale)
        segmenter = Segmenter(config, params)
        logits = segmenter.logits(image)
        class_ids, _ = segmenter.decode(logits, image.shape[:2])
    write_png(output, overlay(image, class_ids, palette_for(logits.shape[-1]), alpha))
    if save_logits:
        if not save_logits.endswith(".npy"):
            save_logits += ".npy"  # as np.save names it
        buffer = io.BytesIO()
        np.save(buffer, logits)
        atomic_write_bytes(save_logits, buffer.getvalue())
    return class_ids


def _main() -> None:
    class_ids = run(FLAGS.model, FLAGS.image, FLAGS.output, FLAGS.num_classes,
                    FLAGS.filter_scale, FLAGS.save_logits, FLAGS.alpha, FLAGS.runtime)
    print(f"wrote {FLAGS.output} ({class_ids.shape[1]}x{class_ids.shape[0]}, "
          f"{len(np.unique(class_ids))} classes present)")


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
