"""Trains ICNet with the cascade label guidance loss; rerunning the same command resumes.

Example (the embedded synthetic street scenes, from scratch, about 10 minutes on 2 cores):
  python -m train.train --dataset synthetic --model_dir runs/fs1 --filter_scale 1 \
      --steps 1500 --batch_size 8 --crop_size 256x512 --learning_rate 0.02

Fine-tuning the released Cityscapes weights on your data:
  python -m train.train --dataset cityscapes --data_dir /data/cityscapes --model_dir runs/ft \
      --init_weights icnet_cityscapes_train_30k_bnnomerge.npy --steps 30000 --crop_size 720x720

The model's plan comes from --channel_plan, else the model dir's plan.json (resuming), else the
--init_weights file (a pruned checkpoint keeps its widths), else --filter_scale.
"""

from __future__ import annotations

import os
import sys

import tensorflow as tf
from absl import app, flags, logging

from icnet.cli import parse_size
from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.data import check_crop_fits, make_source
from icnet.inference import load_weights
from icnet.training import (TrainingDiverged, TrainingInterrupted, TrainOptions, make_strategy,
                            train)

flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "cityscapes", "ade20k", "list"],
                  "Training data; synthetic street scenes need no files.")
flags.DEFINE_string("data_dir", None, "Dataset root (cityscapes, ade20k) or list base dir.")
flags.DEFINE_string("train_list", None, "List file of `image label` pairs (--dataset list).")
flags.DEFINE_enum("label_map", "trainids", ["trainids", "cityscapes_labelids", "ade20k"],
                  "How the list dataset's label PNGs are stored.")
flags.DEFINE_string("model_dir", None, "Where checkpoints, plan.json and summaries go.")
flags.DEFINE_float("filter_scale", None, "Reference widths: 1 (half, default) or 2 (full).")
flags.DEFINE_string("channel_plan", None, "A plan.json giving every conv's width.")
flags.DEFINE_string("init_weights", None,
                    "Reference .npy (merged or bnnomerge) or checkpoint to start from.")
flags.DEFINE_integer("num_classes", None, "Classes (default: the dataset's).")
flags.DEFINE_integer("steps", 1500, "Total training steps (a resumed run stops here too).")
flags.DEFINE_integer("batch_size", 8, "Global batch size (split across replicas).")
flags.DEFINE_string("crop_size", "256x512", "Random crop HxW.")
flags.DEFINE_float("learning_rate", 0.02, "Base learning rate (reference fine-tuning: 5e-4).")
flags.DEFINE_float("poly_power", 0.9, "Poly decay: lr * (1 - step/steps)^power.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"],
                  "Momentum SGD as the reference, or Adam (faster from scratch).")
flags.DEFINE_float("weight_decay", 1e-4, "L2 weight decay on conv kernels.")
flags.DEFINE_float("lambda1", 0.16, "Loss weight of sub4_out (1/16).")
flags.DEFINE_float("lambda2", 0.4, "Loss weight of sub24_out (1/8).")
flags.DEFINE_float("lambda3", 1.0, "Loss weight of conv6_cls (1/4).")
flags.DEFINE_bool("update_mean_var", True,
                  "Train BN in batch-statistics mode, updating moving mean/variance "
                  "(needs large batches; --noupdate_mean_var freezes them as the reference).")
flags.DEFINE_bool("train_beta_gamma", True, "Train BN gamma/beta.")
flags.DEFINE_bool("random_scale", True, "Random scale 0.5-2.0.")
flags.DEFINE_bool("random_mirror", True, "Random left-right mirror.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy; multi_worker reads TF_CONFIG.")
flags.DEFINE_integer("logical_cpus", 0,
                     "Split the CPU into this many logical devices (for --strategy mirrored "
                     "without GPUs); 0 leaves it as is.")
flags.DEFINE_bool("mixed_precision", False, "float16 on GPU, bfloat16 on CPU.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and augmentation.")
flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints.")
flags.DEFINE_integer("log_every", 10, "Steps between progress lines and scalar summaries.")
flags.DEFINE_string("synthetic_size", "256x512", "HxW of the synthetic scenes.")
flags.DEFINE_integer("synthetic_count", 0,
                     "Train on a fixed pool of this many synthetic scenes, rendered once and "
                     "kept in memory; 0 renders a fresh scene for every crop.")
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
        tf.keras.utils.set_random_seed(FLAGS.seed)
        crop = parse_size(FLAGS.crop_size, "crop_size")
        source = make_source(FLAGS.dataset, "train", data_dir=FLAGS.data_dir,
                             list_file=FLAGS.train_list, num_classes=FLAGS.num_classes,
                             synthetic_size=parse_size(FLAGS.synthetic_size, "synthetic_size"),
                             synthetic_count=FLAGS.synthetic_count or None,
                             seed=FLAGS.seed, label_map=FLAGS.label_map)
        if len(source) == 0:
            raise ValueError(f"the {FLAGS.dataset} training set is empty")
        check_crop_fits(source, crop)
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
            plan = ICNetConfig.from_filter_scale(FLAGS.filter_scale or 1, 1).plan
        config = ICNetConfig(source.num_classes, plan, batch_norm=True)
        options = TrainOptions(
            model_dir=FLAGS.model_dir, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
            crop_size=crop, learning_rate=FLAGS.learning_rate, poly_power=FLAGS.poly_power,
            momentum=FLAGS.momentum, optimizer=FLAGS.optimizer, weight_decay=FLAGS.weight_decay,
            lambdas=(FLAGS.lambda1, FLAGS.lambda2, FLAGS.lambda3),
            update_mean_var=FLAGS.update_mean_var, train_beta_gamma=FLAGS.train_beta_gamma,
            random_scale=FLAGS.random_scale, random_mirror=FLAGS.random_mirror,
            strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision, seed=FLAGS.seed,
            cache_examples=FLAGS.dataset == "synthetic" and FLAGS.synthetic_count > 0,
            checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every)
        summary = train(options, config, source, init, strategy)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except (TrainingDiverged, TrainingInterrupted) as e:
        logging.error("%s", e)
        sys.exit(1)
    logging.info("done: step %d in %.1f s, final loss %s", summary["step"], summary["seconds"],
                 summary["losses"].get("loss"))


if __name__ == "__main__":
    app.run(main)
