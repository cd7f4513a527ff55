r"""Trains ICNet with the cascade label guidance loss; rerunning the same command resumes.

Example (the embedded synthetic street scenes, from scratch, under 10 minutes on 2 cores;
the defaults are Adam at 2e-3, batch 8, 256x512 crops of a 1000-scene pool, mirroring):
  python -m train.train --model_dir runs/fs1 --filter_scale 1 --steps 800

Fine-tuning the released Cityscapes weights with the reference's settings (BN frozen):
  python -m train.train --dataset cityscapes --data_dir /data/cityscapes --model_dir runs/ft \
      --init_weights icnet_cityscapes_train_30k_bnnomerge.npy --optimizer sgd \
      --learning_rate 5e-4 --noupdate_mean_var --notrain_beta_gamma --random_scale \
      --crop_size 720x720 --steps 30000

The model's plan comes from --channel_plan, else --filter_scale when given, else the model
dir's plan.json (resuming), else the --init_weights file (a pruned checkpoint keeps its
widths), else the half-width reference plan.
"""

from __future__ import annotations

import os
import sys

import tensorflow as tf
import tf_keras
from absl import app, flags, logging

from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.inference import load_weights
from icnet.training import TrainingDiverged, TrainingInterrupted, make_strategy, train
from train.common_flags import (define_data_flags, define_training_flags, source_from_flags,
                                train_options_from_flags)

define_data_flags()
define_training_flags()
flags.DEFINE_string("model_dir", None, "Where checkpoints, plan.json and summaries go.")
flags.DEFINE_float("filter_scale", None, "Reference widths: 1 (half, default) or 2 (full); "
                   "other positive values scale them (0.25: a narrow test model).")
flags.DEFINE_string("channel_plan", None, "A plan.json giving every conv's width.")
flags.DEFINE_string("init_weights", None,
                    "Reference .npy (merged or bnnomerge) or checkpoint to start from.")
flags.DEFINE_integer("steps", 800, "Total training steps (a resumed run stops here too).")
flags.DEFINE_integer("logical_cpus", 0,
                     "Split the CPU into this many logical devices (for --strategy mirrored "
                     "without GPUs); 0 leaves it as is.")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
    try:
        # Multi-worker strategies must exist before any other op runs.
        strategy = make_strategy(FLAGS.strategy)
        tf_keras.utils.set_random_seed(FLAGS.seed)
        source = source_from_flags("train")
        options = train_options_from_flags(FLAGS.model_dir, FLAGS.steps, source)
        init = None
        if FLAGS.init_weights:
            init_config, init_weights = load_weights(FLAGS.init_weights)
            init = (init_weights, FLAGS.init_weights)
        plan_path = os.path.join(FLAGS.model_dir, PLAN_FILENAME)
        if FLAGS.channel_plan:
            plan = ICNetConfig.load(FLAGS.channel_plan).plan
        elif os.path.isfile(plan_path) and FLAGS.filter_scale is None:
            plan = ICNetConfig.load(plan_path).plan
        elif init is not None and FLAGS.filter_scale is None:
            plan = init_config.plan
        else:
            plan = ICNetConfig.from_filter_scale(
                1 if FLAGS.filter_scale is None else FLAGS.filter_scale, 1).plan
        config = ICNetConfig(source.num_classes, plan, batch_norm=True)
        summary = train(options, config, source, init, strategy)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except (TrainingDiverged, TrainingInterrupted) as e:
        logging.error("%s", e)
        sys.exit(1)
    if summary["losses"]:
        logging.info("done: step %d in %.1f s, final loss %.4f", summary["step"],
                     summary["seconds"], summary["losses"]["loss"])


if __name__ == "__main__":
    app.run(main)
