"""The flags the binaries share, one spelling per concept, and their conversion into library
objects (binaries only; library code never reads FLAGS).

| concept | flag |
|---|---|
| the model a tool reads | `--model` (a model dir, checkpoint prefix or reference .npy; predict: also an artifact) |
| the directory a tool writes | `--model_dir` (train), `--output_dir` (prune, report, synthetic), `--export_dir` (export) |
| a channel plan file | `--plan` |
| the model's input size | `--input_size` |
| image counts | `--eval_images`, `--parity_images`, `--calibration_images` |
| the data | `--dataset`, `--data_dir`, `--train_list`, `--val_list`, `--label_map`, `--num_classes`, `--synthetic_size`, `--synthetic_count`, `--seed` |

train.train records the data flags and its training options in the model's
train_summary.json; deploy.prune and deploy.export start from that record, so a fine-tune
trains like the source did unless a flag says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

from absl import flags

from icnet.cli import parse_size
from icnet.data import SYNTHETIC_TRAIN_COUNT, Source, make_source, warn_if_crop_pads
from icnet.model import MIN_INPUT_SIZE
from icnet.training import OPTIMIZERS, TrainOptions

FLAGS = flags.FLAGS
DATA_DEFAULTS = {"dataset": "synthetic", "data_dir": None, "train_list": None,
                 "val_list": None, "label_map": "trainids", "num_classes": None,
                 "synthetic_size": "256x512", "synthetic_count": 1000, "seed": 0}


def define_data_flags(exclude: tuple[str, ...] = ()) -> None:
    """--dataset and where its files are; synthetic scene size, pool and seed (less
    `exclude`, which then come from the model's record or the defaults)."""
    definitions = {
        "dataset": lambda: flags.DEFINE_enum(
            "dataset", "synthetic", ["synthetic", "cityscapes", "ade20k", "list"],
            "Data; the synthetic street scenes need no files."),
        "data_dir": lambda: flags.DEFINE_string(
            "data_dir", None, "Dataset root (cityscapes, ade20k) or list base dir."),
        "train_list": lambda: flags.DEFINE_string(
            "train_list", None, "Training list of `image label` lines (list)."),
        "val_list": lambda: flags.DEFINE_string(
            "val_list", None, "Validation list of `image label` lines (list)."),
        "label_map": lambda: flags.DEFINE_enum(
            "label_map", "trainids", ["trainids", "cityscapes_labelids", "ade20k"],
            "How the list dataset's label PNGs are stored."),
        "num_classes": lambda: flags.DEFINE_integer(
            "num_classes", None, "Classes (default: the dataset's)."),
        "synthetic_size": lambda: flags.DEFINE_string(
            "synthetic_size", "256x512", "HxW of the synthetic scenes."),
        "synthetic_count": lambda: flags.DEFINE_integer(
            "synthetic_count", 1000, "Train on a pool of this many synthetic scenes, rendered "
            "once and kept in memory; 0 renders a fresh scene for every crop."),
        "seed": lambda: flags.DEFINE_integer(
            "seed", 0, "Seed of scenes, initialisation, data order, augmentation."),
    }
    for name, define in definitions.items():
        if name not in exclude:
            define()


def data_values(recorded: Mapping | None = None) -> dict:
    """Every data setting: a flag given on the command line, else the model's record, else
    the flag's (or, for a flag this binary lacks, the kit's) default."""
    recorded = recorded or {}
    values = {}
    for name, default in DATA_DEFAULTS.items():
        defined = name in FLAGS
        if defined and FLAGS[name].present:
            values[name] = FLAGS[name].value
        elif name in recorded:
            values[name] = recorded[name]
        else:
            values[name] = FLAGS[name].value if defined else default
    return values


def make_data_source(values: Mapping, split: str) -> Source:
    """The `split` of the data `values` describe (make_source raises ValueError for a missing
    or empty one)."""
    return make_source(
        values["dataset"], split, data_dir=values["data_dir"],
        list_file=values["train_list"] if split == "train" else values["val_list"],
        num_classes=values["num_classes"],
        synthetic_size=parse_size(values["synthetic_size"], "synthetic_size"),
        synthetic_count=(values["synthetic_count"] or None) if split == "train" else None,
        seed=values["seed"], label_map=values["label_map"])


def source_from_flags(split: str) -> Source:
    """The `split` of the data the flags describe."""
    return make_data_source(data_values(), split)


def define_training_flags(learning_rate: float = TrainOptions.learning_rate) -> tuple[str, ...]:
    """The optimisation, augmentation and bookkeeping flags of the training loop (defaults:
    TrainOptions'); returns their names."""
    before = set(FLAGS)
    defaults = TrainOptions(model_dir="", steps=1)
    flags.DEFINE_integer("batch_size", defaults.batch_size,
                         "Global batch size (split across replicas).")
    flags.DEFINE_string("crop_size", "x".join(map(str, defaults.crop_size)), "Random crop HxW.")
    flags.DEFINE_enum("optimizer", defaults.optimizer, list(OPTIMIZERS),
                      "Momentum SGD as the reference, or Adam (much faster from scratch).")
    flags.DEFINE_float("learning_rate", learning_rate,
                       "Base learning rate (reference fine-tuning with SGD: 5e-4).")
    flags.DEFINE_float("poly_power", defaults.poly_power,
                       "Poly decay: lr * (1 - step/steps)^power.")
    flags.DEFINE_float("momentum", defaults.momentum, "SGD momentum.")
    flags.DEFINE_float("weight_decay", defaults.weight_decay, "L2 weight decay on conv kernels.")
    flags.DEFINE_float("lambda1", defaults.lambdas[0], "Loss weight of sub4_out (1/16).")
    flags.DEFINE_float("lambda2", defaults.lambdas[1], "Loss weight of sub24_out (1/8).")
    flags.DEFINE_float("lambda3", defaults.lambdas[2], "Loss weight of conv6_cls (1/4).")
    flags.DEFINE_bool("update_mean_var", defaults.update_mean_var,
                      "Train BN in batch-statistics mode, updating moving mean/variance (needs "
                      "large batches); --noupdate_mean_var freezes BN: it normalizes with the "
                      "stored statistics and leaves them unchanged (the reference normalizes "
                      "with batch statistics and only skips the updates).")
    flags.DEFINE_integer("precise_bn_batches", defaults.precise_bn_batches,
                         "At the last step, re-estimate the BN moving statistics over this "
                         "many training batches at the final weights (precise BN; 0: keep "
                         "the moving averages, which lag in short runs).")
    flags.DEFINE_bool("train_beta_gamma", defaults.train_beta_gamma,
                      "Train BN gamma/beta (the reference's fine-tuning default is "
                      "--notrain_beta_gamma).")
    flags.DEFINE_bool("random_scale", defaults.random_scale,
                      "Random scale 0.5-2.0 (the reference's option).")
    flags.DEFINE_bool("random_mirror", defaults.random_mirror, "Random left-right mirror.")
    flags.DEFINE_enum("strategy", defaults.strategy, ["default", "mirrored", "multi_worker"],
                      "tf.distribute strategy; multi_worker reads TF_CONFIG.")
    flags.DEFINE_bool("mixed_precision", defaults.mixed_precision,
                      "Mixed precision: float16 on GPU, bfloat16 on CPU. Default: bfloat16 on a "
                      "CPU with native bf16 (AMX-BF16 or AVX512-BF16) and no GPU, else off.")
    flags.DEFINE_integer("checkpoint_every", defaults.checkpoint_every,
                         "Steps between checkpoints.")
    flags.DEFINE_integer("log_every", defaults.log_every,
                         "Steps between progress lines and scalar summaries.")
    return tuple(sorted(set(FLAGS) - before))


_TRAINING_FIELDS = {"batch_size": "batch_size", "optimizer": "optimizer",
                    "learning_rate": "learning_rate", "poly_power": "poly_power",
                    "momentum": "momentum", "weight_decay": "weight_decay",
                    "update_mean_var": "update_mean_var",
                    "precise_bn_batches": "precise_bn_batches",
                    "train_beta_gamma": "train_beta_gamma",
                    "random_scale": "random_scale", "random_mirror": "random_mirror",
                    "strategy": "strategy", "mixed_precision": "mixed_precision",
                    "checkpoint_every": "checkpoint_every", "log_every": "log_every",
                    "seed": "seed"}


def train_options_from_flags(model_dir: str, steps: int, source: Source,
                             recorded: Mapping | None = None) -> TrainOptions:
    """TrainOptions: the training flags given on the command line, else the `recorded`
    options (the source model's, for a fine-tune), else the flags' defaults. The learning rate
    is always the flag's (a fine-tune's rate is not its source's). Warns when crops are
    larger than the images."""
    recorded = dict(recorded or {})
    changes = {}
    for flag, field in _TRAINING_FIELDS.items():
        if flag in FLAGS and (FLAGS[flag].present or field not in recorded
                              or flag == "learning_rate"):
            changes[field] = FLAGS[flag].value
    if "crop_size" in FLAGS and (FLAGS["crop_size"].present or "crop_size" not in recorded):
        changes["crop_size"] = parse_size(FLAGS.crop_size, "crop_size", MIN_INPUT_SIZE)
    if "lambda1" in FLAGS and (any(FLAGS[f"lambda{i}"].present for i in (1, 2, 3))
                               or "lambdas" not in recorded):
        changes["lambdas"] = (FLAGS.lambda1, FLAGS.lambda2, FLAGS.lambda3)
    pool = source.name == "synthetic" and len(source) < SYNTHETIC_TRAIN_COUNT
    options = TrainOptions.from_dict(recorded, **changes, model_dir=model_dir, steps=steps,
                                     cache_examples=pool)
    warn_if_crop_pads(source, options.crop_size)
    return options


def define_pruning_flags() -> None:
    """What to prune to and how: --keep, --keep_overrides, --plan, --round_to,
    --finetune_steps, --criterion, --control."""
    flags.DEFINE_string("keep", "0.5", "Fraction of every group's channels to keep (0.5), or "
                        "progressive keeps of the ORIGINAL widths, one stage each (0.75,0.5).")
    flags.DEFINE_string("keep_overrides", None, "Per-prefix keeps, e.g. conv5=0.6,sub1=1.0.")
    flags.DEFINE_string("plan", None, "A plan.json with the target widths (instead of --keep).")
    flags.DEFINE_integer("round_to", 1, "Round kept widths up to a multiple of this (1: off).")
    flags.DEFINE_integer("finetune_steps", 0, "Training steps after each stage (0: none).")
    flags.DEFINE_enum("criterion", "l1", ["l1", "l2", "bn_scale", "taylor", "random"],
                      "Channel importance: l1 (the paper's), l2, bn_scale (BN gammas), taylor "
                      "(first-order Taylor of the loss on training batches), random (control).")
    flags.DEFINE_bool("control", False, "Also fine-tune the unpruned source for as many steps "
                      "as the pruned model (the equal-budget control) and report the mIoU "
                      "change against it.")


def define_budget_flags(settings: bool = True) -> None:
    """A budget instead of keeps: --target_latency_ms or --target_gflops, and --search_images;
    with `settings` (deploy.prune) also --target_runtime, --target_quantization,
    --target_threads, --latency_table and --min_keep, which otherwise keep their defaults."""
    flags.DEFINE_float("target_latency_ms", None, "Prune to this latency on the target "
                       "runtime (int8 TFLite XNNPACK, 2 threads, unless deploy.prune says "
                       "otherwise) at --input_size: deploy.budget's search instead of --keep.")
    flags.DEFINE_float("target_gflops", None, "Prune to this many GFLOPs of convolutions at "
                       "--input_size (a runtime-free budget, instead of --keep).")
    flags.DEFINE_integer("search_images", 4, "Val images of the layer sensitivity that scores "
                         "a budget search's cuts (0: score by --criterion alone, no "
                         "evaluation).")
    if not settings:
        return
    flags.DEFINE_string("target_runtime", "tflite_xnnpack", "The TFLite runtime "
                        "(deploy.runtimes) a latency budget is measured on.")
    flags.DEFINE_string("target_quantization", "int8", "The TFLite quantization a latency "
                        "budget is measured in (fp32, fp16, dynamic, int8).")
    flags.DEFINE_integer("target_threads", 2, "Threads of the latency target.")
    flags.DEFINE_string("latency_table", None, "The latency table file (default: "
                        "<model dir>/latency/<runtime>_<quantization>_<threads>t_<HxW>.json).")
    flags.DEFINE_float("min_keep", 0.25, "A budget's narrowest fraction of any group's width.")


def _defined(names: Mapping[str, str]) -> dict:
    """{field: flag value} of the flags this binary defines (`names`: field -> flag name)."""
    return {field: FLAGS[name].value for field, name in names.items() if name in FLAGS}


def prune_options_from_flags(record: Mapping, train_source: Source | None, eval_images: int,
                             input_size: tuple[int, int]):
    """deploy.prune_lib.PruneOptions from the pruning flags; a fine-tune's options from the
    training flags and the source's `record` (train_summary.json)."""
    from deploy.latency_table import Target
    from deploy.prune_lib import Budget, PruneOptions  # TensorFlow: the binaries that prune
    from deploy.pruning import parse_overrides, parse_schedule
    from icnet.config import ICNetConfig
    from icnet.exits import OptionError

    if FLAGS.plan and FLAGS["keep"].present:
        raise OptionError("plan", "give --keep or --plan, not both")
    budget = None
    if "target_latency_ms" in FLAGS and (FLAGS.target_latency_ms is not None
                                         or FLAGS.target_gflops is not None):
        for name in ("keep", "plan", "keep_overrides"):
            if FLAGS[name].present:
                raise OptionError(name, "a budget (--target_latency_ms, --target_gflops) "
                                        "chooses the widths: drop --" + name)
        target = Target(input_size=tuple(input_size), **_defined(
            {"runtime": "target_runtime", "quantization": "target_quantization",
             "threads": "target_threads"}))
        budget = Budget(FLAGS.target_latency_ms, FLAGS.target_gflops, target, **_defined(
            {"table": "latency_table", "min_keep": "min_keep",
             "search_images": "search_images"}))
    if FLAGS.finetune_steps < 0:
        raise OptionError("finetune_steps", f"must be >= 0, got {FLAGS.finetune_steps}")
    finetune = None
    if FLAGS.finetune_steps > 0:
        finetune = train_options_from_flags("", FLAGS.finetune_steps, train_source,
                                            record.get("options"))
    return PruneOptions(
        schedule=(1.0,) if FLAGS.plan or budget else parse_schedule(FLAGS.keep),
        overrides=parse_overrides(FLAGS.keep_overrides or ""),
        plan=ICNetConfig.load(FLAGS.plan).plan if FLAGS.plan else None,
        round_to=FLAGS.round_to, criterion=FLAGS.criterion, finetune=finetune,
        eval_images=eval_images, input_size=input_size, control=FLAGS.control, budget=budget)


def define_plan_flags(filter_scale: float) -> None:
    """--model, --plan, --filter_scale (default `filter_scale`) and --num_classes: which channel
    plan a profiling binary looks at (see plan_from_flags)."""
    flags.DEFINE_string("model", None, "Model directory with plan.json (e.g. a pruned model).")
    flags.DEFINE_string("plan", None, "A plan.json file.")
    flags.DEFINE_float("filter_scale", filter_scale, "Reference plan width: 1 (half) or 2 "
                       "(full); other positive values scale the widths.")
    flags.DEFINE_integer("num_classes", 19, "Classifier width (ignored with --model/--plan).")


def plan_from_flags():
    """(config, where it came from) of the plan the define_plan_flags flags select.

    Raises:
      FileNotFoundError, ValueError: see icnet.checkpoint.select_plan.
    """
    from icnet.checkpoint import select_plan  # TensorFlow, only for the binaries that use it

    return select_plan(FLAGS.model, FLAGS.plan, FLAGS.filter_scale, FLAGS.num_classes)
