r"""Trains ICNet with the cascade label guidance loss; rerunning the same command resumes.

Example (the embedded synthetic street scenes, from scratch, under 10 minutes on 2 cores;
the defaults are Adam at 2e-3, batch 8, 256x512 crops of a 1000-scene pool, mirroring):
  python -m train.train --model_dir runs/fs1 --filter_scale 1 --steps 800

Fine-tuning the released Cityscapes weights with the reference's settings (BN frozen):
  python -m train.train --dataset cityscapes --data_dir /data/cityscapes --model_dir runs/ft \
      --model icnet_cityscapes_train_30k_bnnomerge.npy --optimizer sgd \
      --learning_rate 5e-4 --noupdate_mean_var --notrain_beta_gamma --random_scale \
      --crop_size 720x720 --steps 30000

The model's plan comes from --plan, else --filter_scale when given, else the model dir's
plan.json (resuming), else the --model file (a pruned checkpoint keeps its widths), else the
half-width reference plan. SIGINT/SIGTERM save a checkpoint and exit with code 75; rerunning
resumes from the newest intact checkpoint.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras
from absl import app, flags

from icnet import exits
from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.inference import load_weights
from icnet.training import make_strategy, train
from train.common_flags import (data_values, define_data_flags, define_training_flags,
                                make_data_source, train_options_from_flags)

define_data_flags()
define_training_flags()
flags.DEFINE_string("model_dir", None, "Where checkpoints, plan.json and summaries go.")
flags.DEFINE_string("model", None, "Start from this model when --model_dir has no checkpoint: "
                    "a reference .npy (merged or bnnomerge), a model dir or checkpoint prefix.")
flags.DEFINE_float("filter_scale", None, "Reference widths: 1 (half, default) or 2 (full); "
                   "other positive values scale them (0.25: a narrow test model).")
flags.DEFINE_string("plan", None, "A plan.json giving every conv's width.")
flags.DEFINE_integer("steps", 800, "Total training steps (a resumed run stops here too).")
flags.DEFINE_integer("logical_cpus", 0,
                     "Split the CPU into this many logical devices (for --strategy mirrored "
                     "without GPUs); 0 leaves it as is.")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def _plan(init_config: ICNetConfig | None) -> dict[str, int]:
    plan_path = os.path.join(FLAGS.model_dir, PLAN_FILENAME)
    if FLAGS.plan:
        return ICNetConfig.load(FLAGS.plan).plan
    if os.path.isfile(plan_path) and FLAGS.filter_scale is None:
        return ICNetConfig.load(plan_path).plan
    if init_config is not None and FLAGS.filter_scale is None:
        return init_config.plan
    return ICNetConfig.from_filter_scale(
        1 if FLAGS.filter_scale is None else FLAGS.filter_scale, 1).plan


def _main() -> None:
    if FLAGS.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
    strategy = make_strategy(FLAGS.strategy)  # multi-worker: before any other op runs
    tf_keras.utils.set_random_seed(FLAGS.seed)
    data = data_values()
    source = make_data_source(data, "train")
    options = train_options_from_flags(FLAGS.model_dir, FLAGS.steps, source)
    init_config, init = None, None
    if FLAGS.model:
        init_config, weights = load_weights(FLAGS.model)
        init = (weights, FLAGS.model)
    config = ICNetConfig(source.num_classes, _plan(init_config), batch_norm=True)
    summary = train(options, config, source, init, strategy, data=data)
    if summary["losses"]:
        print(f"done: step {summary['step']} in {summary['seconds']:.1f} s, final loss "
              f"{summary['losses']['loss']:.4f}")


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
