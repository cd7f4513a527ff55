r"""Evaluates a model: mIoU, pixel accuracy and a per-class IoU table.

Examples:
  python -m train.evaluate --dataset synthetic --model runs/fs1 --eval_images 100 \
      --json runs/fs1/eval.json
  python -m train.evaluate --dataset cityscapes --data_dir /data/cityscapes \
      --model icnet_cityscapes_train_30k.npy --write_predictions preds/

The reference's evaluate.py protocols: Cityscapes images are padded to 1025x2049, pooled with
the reference's Cityscapes evaluation windows, and their logits resized to the label size
before the argmax; ADE20K images are resized to 480x480 (aligned corners) and their logits
resized to the label size. Other datasets are padded to 32k+1 and segmented as deploy.predict
does (logits upsampled to the padded size and cropped).
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from icnet import exits
from icnet.data.labels import CITYSCAPES_NUM_CLASSES
from icnet.evaluation import evaluate, format_table
from icnet.fileio import atomic_write_bytes
from icnet.inference import load_weights
from train.common_flags import define_data_flags, source_from_flags

define_data_flags()
flags.DEFINE_string("model", None, "A model dir (checkpoint + plan.json), checkpoint prefix "
                    "or reference .npy.")
flags.DEFINE_integer("eval_images", 0, "Evaluate the first N images; 0 = all.")
flags.DEFINE_string("json", None, "Write the results as JSON here.")
flags.DEFINE_string("write_predictions", None,
                    "Write Cityscapes labelId PNGs (submission format) into this directory.")
FLAGS = flags.FLAGS


def _main() -> None:
    if not FLAGS.model:
        raise exits.OptionError("model", "is required")
    source = source_from_flags("val")
    if FLAGS.write_predictions and source.num_classes != CITYSCAPES_NUM_CLASSES:
        raise exits.OptionError("write_predictions", f"writes Cityscapes labelIds and needs "
                                f"the 19 Cityscapes classes, not {source.num_classes}")
    config, weights = load_weights(FLAGS.model, source.num_classes)
    result = evaluate(config, weights, source, FLAGS.eval_images, FLAGS.write_predictions)
    print(format_table(result, source.class_names))
    if FLAGS.json:
        atomic_write_bytes(FLAGS.json, json.dumps(result, indent=1).encode())
        logging.info("wrote %s", FLAGS.json)


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
