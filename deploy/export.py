r"""Exports a trained ICNet as a TF Serving SavedModel, TFLite flatbuffers and ONNX, verified.

Examples:
  # Everything at the Cityscapes evaluation size, verified on synthetic street scenes:
  python -m deploy.export --model runs/fs1 --export_dir exports/icnet \
      --quantize fp32,fp16,dynamic,int8,qat --formats saved_model,tflite,onnx
  # A released reference file, TFLite int8 only, 100 calibration images from Cityscapes:
  python -m deploy.export --model icnet_cityscapes_train_30k.npy --export_dir exports/c \
      --formats tflite --quantize int8 --dataset cityscapes --data_dir /data/cityscapes
  # Prune to half width with 200 fine-tuning steps, then export the pruned model (and the
  # unpruned one at fp32, side by side):
  python -m deploy.export --model runs/fs2 --export_dir exports/p --prune --keep 0.5 \
      --finetune_steps 200

The layout of --export_dir is deploy.layout's; the export is staged beside it and published
in one step, so after a crash at any moment --export_dir holds the old export or the new one,
never a mix. An existing export is kept unless --overwrite, which replaces it, keeping the
other SavedModel versions of the models it writes (TF Serving's version history).

Every artifact is verified under every runtime that runs it; one below an accuracy floor
(--min_agreement, --max_miou_drop) makes the export exit with code 3 after writing it
(--nofloors: only marked in the report).

What a user rarely sets comes from the model or has a default: the data (--dataset and the
rest; a list dataset's files and classes only from the model) is the model's training data
(its train_summary.json) unless a data flag is given,
with synthetic scenes at --input_size; a pruning fine-tune trains like the source did, at
--learning_rate; QAT runs at half the export size when that is a 32k+1 size (1025x2049 ->
513x1025). SIGINT/SIGTERM exit with code 75; during a pruning fine-tune they save a checkpoint,
and rerunning the same command resumes it.
"""

from __future__ import annotations

import tf_keras
from absl import app, flags

from deploy import layout
from deploy.export_lib import GPU_CHECKS, ExportOptions, export
from deploy.report import markdown
from icnet import exits
from icnet.checkpoint import model_dir_of
from icnet.cli import parse_choices, parse_size
from icnet.model import MIN_INPUT_SIZE
from icnet.training import read_summary
from train.common_flags import (data_values, define_budget_flags, define_data_flags,
                                define_pruning_flags,
                                make_data_source, prune_options_from_flags)

flags.DEFINE_string("model", None, "Model dir (checkpoint + plan.json), checkpoint prefix or "
                    "reference .npy to export.")
flags.DEFINE_string("export_dir", None, "Output directory.")
flags.DEFINE_string("model_name", "icnet", "TF Serving model name and artifact file stem.")
flags.DEFINE_integer("version", 1, "TF Serving version number.")
flags.DEFINE_bool("overwrite", False, "Replace the export in --export_dir (other SavedModel "
                  "versions of the models it writes are kept).")
flags.DEFINE_string("input_size", "1025x2049", "HxW of every artifact's input.")
flags.DEFINE_string("formats", ",".join(layout.FORMATS),
                    f"Comma-separated subset of {','.join(layout.FORMATS)}.")
flags.DEFINE_string("quantize", "fp32,fp16,dynamic,int8",
                    f"Comma-separated quantizations: {','.join(layout.QUANTIZATIONS)} (all in "
                    f"TFLite; SavedModel and ONNX are fp32).")
flags.DEFINE_integer("parity_images", 20,
                     "Val images for logit parity against the fp32 Keras model.")
flags.DEFINE_integer("eval_images", 100, "Val images for the mIoU of every artifact (and of "
                     "the model before and after pruning); 0 skips.")
flags.DEFINE_enum("gpu_check", "analyzer", GPU_CHECKS, "The GPU-delegate check of every "
                  ".tflite: analyzer (the TFLite Analyzer's op check), run (also 2 val images "
                  "through LiteRT's GPU accelerator on a Vulkan device, against the fp32 model; "
                  "`make gpu-sim` installs a software one) or none.")
flags.DEFINE_integer("calibration_images", 100, "Training images for int8 calibration (and "
                     "the first 16 for the QAT ranges).")
flags.DEFINE_integer("qat_steps", 200, "Quantization-aware fine-tuning steps (with qat).")
flags.DEFINE_bool("prune", False, "Prune first (deploy.prune); the pruned model dir is "
                  "exported as pruned_model/.")
flags.DEFINE_bool("export_unpruned", True, "With --prune, also export the source model "
                  "(fp32, every format) as <model_name>_unpruned, side by side.")
define_pruning_flags()
define_budget_flags(settings=False)
flags.DEFINE_float("learning_rate", 5e-4, "Base learning rate of the pruning fine-tune.")
flags.DEFINE_float("min_agreement", None, "Argmax agreement every artifact must keep with its "
                   "fp32 model under every runtime (default: 0.999 for fp32/fp16 in float32 "
                   "arithmetic, 0.98 for dynamic/int8/qat and bf16/fp16 runtimes).")
flags.DEFINE_float("max_miou_drop", 1.0, "mIoU points an artifact may lose against its fp32 "
                   "model.")
flags.DEFINE_bool("floors", True, "Exit with code 3 when an artifact is below a floor (the "
                  "export is still written, its report marking it); --nofloors only marks.")
define_data_flags(exclude=("synthetic_count", "train_list", "val_list", "label_map",
                           "num_classes"))
FLAGS = flags.FLAGS
PRUNE_ONLY_FLAGS = ("export_unpruned", "keep", "keep_overrides", "plan", "round_to",
                    "finetune_steps", "learning_rate", "criterion", "control",
                    "target_latency_ms", "target_gflops", "search_images")


def _options() -> ExportOptions:
    ignored = [f"--{name}" for name in PRUNE_ONLY_FLAGS if FLAGS[name].present]
    if ignored and not FLAGS.prune:
        raise ValueError(f"{', '.join(ignored)}: only used with --prune")
    quantizations = parse_choices(FLAGS.quantize, layout.QUANTIZATIONS, "quantize")
    formats = parse_choices(FLAGS.formats, layout.FORMATS, "formats")
    if FLAGS["qat_steps"].present and ("qat" not in quantizations or "tflite" not in formats):
        raise exits.OptionError("qat_steps", "only used with qat in --quantize and tflite in "
                                             "--formats")
    return ExportOptions(
        export_dir=FLAGS.export_dir, model_name=FLAGS.model_name, version=FLAGS.version,
        input_size=parse_size(FLAGS.input_size, "input_size", MIN_INPUT_SIZE),
        formats=formats, quantizations=quantizations, overwrite=FLAGS.overwrite,
        parity_images=FLAGS.parity_images, eval_images=FLAGS.eval_images,
        calibration_images=FLAGS.calibration_images, qat_steps=FLAGS.qat_steps,
        gpu_check=FLAGS.gpu_check, seed=FLAGS.seed, export_unpruned=FLAGS.export_unpruned,
        min_agreement=FLAGS.min_agreement, max_miou_drop=FLAGS.max_miou_drop / 100,
        floors=FLAGS.floors)


def _main() -> None:
    for name in ("model", "export_dir"):
        if not getattr(FLAGS, name):
            raise exits.OptionError(name, "is required")
    options = _options()
    record = {} if FLAGS.model.endswith(".npy") else read_summary(model_dir_of(FLAGS.model))
    data = data_values(record.get("data"))
    tf_keras.utils.set_random_seed(data["seed"])
    if not FLAGS["synthetic_size"].present:
        data["synthetic_size"] = FLAGS.input_size
    train_source, eval_source = (make_data_source(data, split) for split in ("train", "val"))
    prune = (prune_options_from_flags(record, train_source, options.eval_images,
                                      options.input_size) if FLAGS.prune else None)
    report = export(FLAGS.model, options, train_source, eval_source, prune)
    print(markdown(report))


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main, {"schedule": "keep"}))
