"""The dataset and training flags shared by train.train, train.evaluate, deploy.prune and
deploy.export, and their conversion into library objects (binaries only; libraries never read
FLAGS)."""

from __future__ import annotations

from absl import flags

from icnet.cli import parse_size
from icnet.data import Source, make_source, warn_if_crop_pads
from icnet.model import MIN_INPUT_SIZE
from icnet.training import OPTIMIZERS, TrainOptions

FLAGS = flags.FLAGS


def define_data_flags() -> None:
    """--dataset and where its files are; synthetic scene size, pool and seed."""
    flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "cityscapes", "ade20k", "list"],
                      "Data; the synthetic street scenes need no files.")
    flags.DEFINE_string("data_dir", None, "Dataset root (cityscapes, ade20k) or list base dir.")
    flags.DEFINE_string("train_list", None, "Training list of `image label` lines (list).")
    flags.DEFINE_string("val_list", None, "Validation list of `image label` lines (list).")
    flags.DEFINE_enum("label_map", "trainids", ["trainids", "cityscapes_labelids", "ade20k"],
                      "How the list dataset's label PNGs are stored.")
    flags.DEFINE_integer("num_classes", None, "Classes (default: the dataset's).")
    flags.DEFINE_string("synthetic_size", "256x512", "HxW of the synthetic scenes.")
    flags.DEFINE_integer("synthetic_count", 1000,
                         "Train on a pool of this many synthetic scenes, rendered once and kept "
                         "in memory; 0 renders a fresh scene for every crop.")
    flags.DEFINE_integer("seed", 0, "Seed of scenes, initialisation, data order, augmentation.")


def define_training_flags(learning_rate: float = 0.002) -> tuple[str, ...]:
    """The optimisation, augmentation and bookkeeping flags of the training loop; returns
    their names."""
    before = set(FLAGS)
    flags.DEFINE_integer("batch_size", 8, "Global batch size (split across replicas).")
    flags.DEFINE_string("crop_size", "256x512", "Random crop HxW.")
    flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS),
                      "Momentum SGD as the reference, or Adam (much faster from scratch).")
    flags.DEFINE_float("learning_rate", learning_rate,
                       "Base learning rate (reference fine-tuning with SGD: 5e-4).")
    flags.DEFINE_float("poly_power", 0.9, "Poly decay: lr * (1 - step/steps)^power.")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    flags.DEFINE_float("weight_decay", 1e-4, "L2 weight decay on conv kernels.")
    flags.DEFINE_float("lambda1", 0.16, "Loss weight of sub4_out (1/16).")
    flags.DEFINE_float("lambda2", 0.4, "Loss weight of sub24_out (1/8).")
    flags.DEFINE_float("lambda3", 1.0, "Loss weight of conv6_cls (1/4).")
    flags.DEFINE_bool("update_mean_var", True,
                      "Train BN in batch-statistics mode, updating moving mean/variance (needs "
                      "large batches); --noupdate_mean_var freezes BN: it normalizes with the "
                      "stored statistics and leaves them unchanged (the reference normalizes "
                      "with batch statistics and only skips the updates).")
    flags.DEFINE_bool("train_beta_gamma", True,
                      "Train BN gamma/beta (the reference's fine-tuning default is "
                      "--notrain_beta_gamma).")
    flags.DEFINE_bool("random_scale", False, "Random scale 0.5-2.0 (the reference's option).")
    flags.DEFINE_bool("random_mirror", True, "Random left-right mirror.")
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                      "tf.distribute strategy; multi_worker reads TF_CONFIG.")
    flags.DEFINE_bool("mixed_precision", False, "float16 on GPU, bfloat16 on CPU.")
    flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints.")
    flags.DEFINE_integer("log_every", 10, "Steps between progress lines and scalar summaries.")
    return tuple(sorted(set(FLAGS) - before))


def source_from_flags(split: str) -> Source:
    """The `split` of --dataset (make_source raises ValueError for a missing or empty one)."""
    return make_source(
        FLAGS.dataset, split, data_dir=FLAGS.data_dir,
        list_file=FLAGS.train_list if split == "train" else FLAGS.val_list,
        num_classes=FLAGS.num_classes,
        synthetic_size=parse_size(FLAGS.synthetic_size, "synthetic_size"),
        synthetic_count=(FLAGS.synthetic_count or None) if split == "train" else None,
        seed=FLAGS.seed, label_map=FLAGS.label_map)


def train_options_from_flags(model_dir: str, steps: int, source: Source) -> TrainOptions:
    """TrainOptions from the training flags (warns when crops are larger than the images)."""
    crop = parse_size(FLAGS.crop_size, "crop_size", MIN_INPUT_SIZE)
    warn_if_crop_pads(source, crop)
    return TrainOptions(
        model_dir=model_dir, steps=steps, batch_size=FLAGS.batch_size, crop_size=crop,
        learning_rate=FLAGS.learning_rate, poly_power=FLAGS.poly_power,
        momentum=FLAGS.momentum, optimizer=FLAGS.optimizer, weight_decay=FLAGS.weight_decay,
        lambdas=(FLAGS.lambda1, FLAGS.lambda2, FLAGS.lambda3),
        update_mean_var=FLAGS.update_mean_var, train_beta_gamma=FLAGS.train_beta_gamma,
        random_scale=FLAGS.random_scale, random_mirror=FLAGS.random_mirror,
        strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision, seed=FLAGS.seed,
        cache_examples=FLAGS.dataset == "synthetic" and FLAGS.synthetic_count > 0,
        checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every)
