r"""Structured kernel pruning: rank each conv's filters by L1 norm, keep the best, fine-tune.

Examples:
  # One shot to half width, then evaluate the result:
  python -m deploy.prune --model runs/fs2 --output_dir runs/fs2_pruned --keep 0.5 \
      --eval_images 20
  # Progressive 0.75 then 0.5 of the original widths, 200 fine-tuning steps after each stage,
  # mIoU on 20 synthetic val images and FLOPs at 1025x2049 in runs/pruned/prune_report.json:
  python -m deploy.prune --model runs/fs2 --output_dir runs/pruned --keep 0.75,0.5 \
      --finetune_steps 200 --eval_images 20
  # Keep conv5 at 0.6 and the full-resolution branch whole; round widths up to multiples of 8:
  python -m deploy.prune --model runs/fs2 --output_dir runs/p2 --keep 0.5 \
      --keep_overrides conv5=0.6,sub1=1.0 --round_to 8
  # Target widths straight from a plan.json (ranking picks which channels survive):
  python -m deploy.prune --model runs/fs2 --output_dir runs/p3 --plan my_plan.json
  # The most accurate plan the search finds that runs in 50 ms as an int8 TFLite model under
  # XNNPACK on 2 threads at 1025x2049 (the latency table is measured once, then reused):
  python -m deploy.prune --model runs/fs2 --output_dir runs/p50 --target_latency_ms 50 \
      --target_runtime tflite_xnnpack --target_quantization int8 --target_threads 2 \
      --round_to 8 --finetune_steps 200 --eval_images 20
  # A runtime-free budget: 30 GFLOPs of convolutions at 1025x2049:
  python -m deploy.prune --model runs/fs2 --output_dir runs/g30 --target_gflops 30

The groups, ranking and surgery are deploy.pruning's; the job (stages, fine-tuning, output)
deploy.prune_lib's. A fine-tune trains like the source model did (its train_summary.json:
crops, batch, optimizer, data) unless a training or data flag says otherwise; its learning
rate is --learning_rate. The output is published atomically; SIGINT/SIGTERM during a
fine-tune save a checkpoint and exit with code 75, and rerunning the same command resumes it.
"""

from __future__ import annotations

import json

import tf_keras
from absl import app, flags

from deploy.prune_lib import prune_model
from icnet import exits
from icnet.checkpoint import model_dir_of
from icnet.cli import parse_size
from icnet.model import MIN_INPUT_SIZE
from icnet.training import read_summary
from train.common_flags import (data_values, define_budget_flags, define_data_flags,
                                define_pruning_flags, define_training_flags, make_data_source,
                                prune_options_from_flags)

flags.DEFINE_string("model", None, "Source model dir (checkpoint + plan.json), checkpoint "
                    "prefix or reference .npy.")
flags.DEFINE_string("output_dir", None, "New model dir for the pruned model (must not exist).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir (only a model "
                  "directory, never the source model).")
define_pruning_flags()
define_budget_flags()
flags.DEFINE_integer("eval_images", 0, "Val images for the mIoU of each stage (0: none).")
flags.DEFINE_string("input_size", "1025x2049", "HxW at which FLOPs are reported (and a "
                    "latency budget is measured).")
define_data_flags()
define_training_flags(learning_rate=5e-4)
FLAGS = flags.FLAGS


def _main() -> None:
    for name in ("model", "output_dir"):
        if not getattr(FLAGS, name):
            raise exits.OptionError(name, "is required")
    record = {} if FLAGS.model.endswith(".npy") else read_summary(model_dir_of(FLAGS.model))
    data = data_values(record.get("data"))
    tf_keras.utils.set_random_seed(data["seed"])
    needs_train = FLAGS.finetune_steps > 0 or FLAGS.criterion == "taylor"
    train_source = make_data_source(data, "train") if needs_train else None
    budget = FLAGS.target_latency_ms is not None or FLAGS.target_gflops is not None
    eval_source = make_data_source(data, "val") if FLAGS.eval_images > 0 or budget else None
    options = prune_options_from_flags(record, train_source, FLAGS.eval_images,
                                       parse_size(FLAGS.input_size, "input_size",
                                                  MIN_INPUT_SIZE))
    report = prune_model(FLAGS.model, FLAGS.output_dir, options, train_source, eval_source,
                         FLAGS.overwrite)
    final = report.final.measure
    result = {"output_dir": FLAGS.output_dir, "params": final.params, "gflops": final.gflops,
              "miou": final.miou}
    if report.budget is not None and report.budget.final_ms is not None:
        result["latency_ms"] = report.budget.final_ms
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main, {"schedule": "keep"}))
