r"""Segments one image and writes a color overlay.

Example:
  python -m deploy.predict --weights icnet_cityscapes_train_30k.npy --num_classes 19 \
      --filter_scale 1 --image street.png --output street_overlay.png --save_logits logits.npy

`--weights` is a reference `.npy` (BN-merged or bnnomerge), a training checkpoint (a model
directory or checkpoint prefix with plan.json beside it), or an exported artifact: a SavedModel
directory, a `.tflite` or an `.onnx` file from deploy.export. Any image size works: the image is
padded to the next 32k+1 (artifacts: to their fixed input size; larger images are resized), and
the overlay has the input's size. `--save_logits` writes the
`conv6_cls` logits (NHWC float32, batch 1, 1/4 of the padded size, before upsampling).
"""

from __future__ import annotations

import io
import sys

import numpy as np
from absl import app, flags

from icnet.checkpoint import latest_checkpoint
from icnet.data.labels import palette_for
from icnet.fileio import atomic_write_bytes
from icnet.image_io import overlay, read_rgb, write_png
from deploy.runners import is_artifact, open_runner, segment
from icnet.inference import Segmenter, load_weights

flags.DEFINE_string("weights", None, "Reference .npy, checkpoint (model dir or prefix), or an "
                    "exported SavedModel dir, .tflite or .onnx file.")
flags.DEFINE_integer("num_classes", None, "Class count; checked against the weights if given.")
flags.DEFINE_float("filter_scale", None, "1 (half width) or 2 (full width); checked against "
                   ".npy weights or a checkpoint if given.")
flags.DEFINE_string("image", None, "Input image (PNG/JPEG, any size, RGB/gray/RGBA).")
flags.DEFINE_string("output", None, "Output overlay PNG.")
flags.DEFINE_string("save_logits", None, "Optional .npy path for the conv6_cls logits "
                    "(.npy is appended if missing).")
flags.DEFINE_float("alpha", 0.5, "Opacity of the class colors in the overlay (0-1).")
flags.mark_flags_as_required(["weights", "image", "output"])
FLAGS = flags.FLAGS


def run(weights: str, image_path: str, output: str, num_classes: int | None = None,
        filter_scale: float | None = None, save_logits: str | None = None,
        alpha: float = 0.5) -> np.ndarray:
    """Segments `image_path`, writes the overlay (and logits); returns the class ids."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be between 0 and 1, got {alpha}")
    image = read_rgb(image_path)
    if is_artifact(weights):
        if filter_scale is not None:
            raise ValueError(f"{weights}: --filter_scale is checked against .npy weights and "
                             f"checkpoints only; an exported artifact has fixed widths")
        class_ids, _, logits = segment(open_runner(weights), image, with_logits=True)
        if num_classes is not None and logits.shape[-1] != num_classes:
            raise ValueError(f"{weights}: has {logits.shape[-1]} classes, but --num_classes "
                             f"is {num_classes}")
    else:
        if not weights.endswith(".npy") and not latest_checkpoint(weights):
            raise FileNotFoundError(f"{weights}: not a .npy file, a model directory with a "
                                    f"checkpoint, a checkpoint prefix, nor an exported artifact "
                                    f"(a SavedModel version directory, a .tflite or an .onnx "
                                    f"file)")
        config, params = load_weights(weights, num_classes, filter_scale)
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


def main(argv):
    del argv
    try:
        class_ids = run(FLAGS.weights, FLAGS.image, FLAGS.output, FLAGS.num_classes,
                        FLAGS.filter_scale, FLAGS.save_logits, FLAGS.alpha)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {FLAGS.output} ({class_ids.shape[1]}x{class_ids.shape[0]}, "
          f"{len(np.unique(class_ids))} classes present)")


if __name__ == "__main__":
    app.run(main)
