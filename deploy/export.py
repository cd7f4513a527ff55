"""Exports a trained ICNet as a TF Serving SavedModel, TFLite flatbuffers and ONNX, verified.

Examples:
  # Everything at the Cityscapes evaluation size, verified on synthetic street scenes:
  python -m deploy.export --model_dir runs/fs1 --export_dir exports/icnet \\
      --quantize fp32,fp16,dynamic,int8,qat --formats saved_model,tflite,onnx
  # A released reference file, TFLite int8 only, 100 calibration images from Cityscapes:
  python -m deploy.export --weights icnet_cityscapes_train_30k.npy --export_dir exports/c \\
      --formats tflite --quantize int8 --dataset cityscapes --data_dir /data/cityscapes
  # Prune to half width with 200 fine-tuning steps, then export the pruned model (and the
  # unpruned one at fp32, side by side):
  python -m deploy.export --model_dir runs/fs2 --export_dir exports/p --prune --keep 0.5 \\
      --finetune_steps 200 --crop_size 513x513

Layout of --export_dir (each part is staged beside it and renamed into place when complete;
an existing export is kept unless --overwrite, which replaces it: parts of the old export that
the new one does not write are removed, except other SavedModel versions of a model it writes
a SavedModel for, which TF Serving keeps as that model's version history):
  saved_model/<model_name>/<version>/   TF Serving: `serving_default` (uint8 images [batch, H,
                                        W, 3] -> class_ids, logits) and `serve_image_bytes`
                                        (JPEG/PNG strings -> class_ids at each image's size),
                                        assets.extra/tf_serving_warmup_requests and plan.json
  tflite/<model_name>_<quant>.tflite    one per --quantize (int8/qat take uint8 pixels)
  onnx/<model_name>.onnx                uint8 NHWC input like serving_default
  plan.json                             the exported model's channel plan
  pruned_model/                         with --prune: checkpoint, plan.json, prune_report.json
  */<model_name>_unpruned*              with --prune: the source model, fp32, every format
                                        (unless --noexport_unpruned)
  export_report.json / .md              per model: params, GFLOPs, mIoU; per artifact: size,
                                        parity against its model's fp32 Keras model, mIoU,
                                        TFLite GPU-delegate verdict

SavedModel and ONNX are float32; --quantize applies to TFLite. The pruning and dataset flags
mean what deploy.prune's flags of the same names mean.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import tf_keras
from absl import app, flags, logging

from deploy import onnx_writer, serving, tflite_writer
from deploy import prune as prune_lib
from deploy import report as report_lib
from deploy.quantize import (
    QAT_LOSSES,
    QUANTIZATIONS,
    calibrate_ranges,
    finetune,
    quantization_aware_model,
    quantization_spec,
    transfer_qat_weights,
)
from deploy.runners import (
    KerasRunner,
    OnnxRunner,
    Runner,
    SavedModelRunner,
    TFLiteRunner,
)
from deploy.staging import Staging
from deploy.verify import SourceImages, compare_runners, evaluate_runners
from icnet.checkpoint import model_dir_of
from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.data import Source, train_dataset
from icnet.fileio import holds, size_on_disk
from icnet.image_io import MAX_IMAGE_PIXELS
from icnet.inference import build_inference_model, load_weights, merged
from icnet.model import MIN_INPUT_SIZE
from icnet.profiling import count_flops
from icnet.training import TrainingDiverged, TrainingInterrupted, TrainOptions
from icnet.weights import WeightDict
from train.common_flags import (
    define_data_flags,
    define_training_flags,
    source_from_flags,
    train_options_from_flags,
)

FORMATS = ("saved_model", "tflite", "onnx")
PRUNED_DIRNAME = "pruned_model"
UNPRUNED_SUFFIX = "_unpruned"
QAT_RANGE_IMAGES = 16  # calibration images that initialise the QAT activation ranges


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """What `deploy.prune.prune_model_dir` is asked to do before exporting."""

    schedule: tuple[float, ...] = (0.5,)
    overrides: tuple[tuple[str, float], ...] = ()
    keep_plan: dict | None = None
    round_to: int = 1
    finetune: TrainOptions | None = None


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Everything an export needs besides the model and the data.

    Attributes:
      export_dir: where the artifacts go (see the module docstring for the layout).
      model_name: TF Serving model name and artifact file stem.
      version: TF Serving version number (a positive integer).
      input_size: (H, W) of every artifact's input.
      formats: subset of FORMATS.
      quantizations: subset of deploy.quantize.QUANTIZATIONS (TFLite).
      overwrite: replace existing artifacts.
      parity_images: val images for the logit parity against the fp32 Keras model.
      eval_images: val images for the mIoU of every artifact (0: skip).
      calibration_images: training images for int8 calibration (>= 100 recommended).
      qat_steps: quantization-aware fine-tuning steps.
      qat_batch_size: its batch size.
      qat_learning_rate: its base learning rate (Adam, poly decay to 0).
      qat_loss: "distill" (match the fp32 model's softmax) or "labels" (cross-entropy).
      qat_crop_size: its crop size (None: the export size); it must build the same graph
        as the export size (32k+1 if the export size is).
      onnx_opset: ONNX opset.
      threads: threads of the TFLite and ONNX Runtime runners during verification.
      max_image_pixels: largest image `serve_image_bytes` decodes.
      gpu_check: run the TFLite Analyzer's GPU-delegate check.
      seed: seed of the QAT data order.
      export_unpruned: when pruning, also export the source model (fp32, every format) as
        `<model_name>_unpruned`, for comparison.
    """

    export_dir: str
    model_name: str = "icnet"
    version: int = 1
    input_size: tuple[int, int] = (1025, 2049)
    formats: tuple[str, ...] = FORMATS
    quantizations: tuple[str, ...] = ("fp32",)
    overwrite: bool = False
    parity_images: int = 20
    eval_images: int = 100
    calibration_images: int = 100
    qat_steps: int = 200
    qat_batch_size: int = 2
    qat_learning_rate: float = 2e-6
    qat_loss: str = "distill"
    qat_crop_size: tuple[int, int] | None = None
    onnx_opset: int = onnx_writer.DEFAULT_OPSET
    threads: int | None = 2
    max_image_pixels: int = MAX_IMAGE_PIXELS
    gpu_check: bool = True
    seed: int = 0
    export_unpruned: bool = True

    def __post_init__(self):
        if not self.model_name or not self.model_name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"model name must be letters, digits, '_' or '-', got "
                             f"{self.model_name!r}")
        if self.version < 1:
            raise ValueError(f"version must be a positive integer, got {self.version}")
        if min(self.input_size) < MIN_INPUT_SIZE:
            raise ValueError(f"input size must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, "
                             f"got {self.input_size[0]}x{self.input_size[1]}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"unknown or no formats {unknown}; choose from {', '.join(FORMATS)}")
        for name in self.quantizations:
            quantization_spec(name)
        if "tflite" in self.formats and not self.quantizations:
            raise ValueError("TFLite export needs at least one quantization")
        for name in ("parity_images", "eval_images", "calibration_images", "qat_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.qat_loss not in QAT_LOSSES:
            raise ValueError(f"qat_loss must be one of {QAT_LOSSES}, got {self.qat_loss!r}")
        if self.qat_batch_size < 1:
            raise ValueError(f"qat_batch_size must be >= 1, got {self.qat_batch_size}")
        if self.qat_learning_rate <= 0:
            raise ValueError(f"qat_learning_rate must be > 0, got {self.qat_learning_rate}")
        if self.onnx_opset not in onnx_writer.OPSETS:
            raise ValueError(f"onnx_opset must be {onnx_writer.OPSETS.start}-"
                             f"{onnx_writer.OPSETS.stop - 1}, got {self.onnx_opset}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or unset), got {self.threads}")
        if self.max_image_pixels < serving.WARMUP_PNG_SIDE ** 2:
            raise ValueError(f"max_image_pixels must be at least {serving.WARMUP_PNG_SIDE ** 2} "
                             f"(the {serving.WARMUP_PNG_SIDE}x{serving.WARMUP_PNG_SIDE} warmup "
                             f"PNG), got {self.max_image_pixels}")

    @property
    def tflite_quantizations(self) -> tuple[str, ...]:
        return self.quantizations if "tflite" in self.formats else ()

    def unpruned(self) -> ExportOptions:
        """The options of the unpruned source model's export: fp32 only, its own name."""
        return dataclasses.replace(self, model_name=f"{self.model_name}{UNPRUNED_SUFFIX}",
                                   quantizations=("fp32",))

    def saved_model_path(self) -> str:
        return os.path.join("saved_model", self.model_name, str(self.version))

    def tflite_path(self, quantization: str) -> str:
        return os.path.join("tflite", f"{self.model_name}_{quantization}.tflite")

    def onnx_path(self) -> str:
        return os.path.join("onnx", f"{self.model_name}.onnx")


def _targets(options: ExportOptions, prune: bool, unpruned: ExportOptions | None) -> list[str]:
    """Every path the export publishes, SavedModel versions last (a model server polling the
    base directory sees a version only once everything else is in place)."""
    models = [m for m in (unpruned, options) if m is not None]
    targets = []
    for model in models:
        targets += [model.tflite_path(q) for q in model.tflite_quantizations]
        if "onnx" in model.formats:
            targets.append(model.onnx_path())
    if prune:
        targets.append(PRUNED_DIRNAME)
    targets += [m.saved_model_path() for m in models if "saved_model" in m.formats]
    return targets + [PLAN_FILENAME, report_lib.JSON_NAME, report_lib.MARKDOWN_NAME]


def _check_data(options: ExportOptions, config: ICNetConfig, train_source: Source | None,
                eval_source: Source | None, prune: PruneOptions | None) -> None:
    """Fails before any work when the data cannot serve what the options ask for."""
    quantizations = options.tflite_quantizations
    for name in ("int8", "qat"):
        if name in quantizations and options.calibration_images < 1:
            raise ValueError(f"{name} needs calibration images (--calibration_images >= 1; "
                             f">= 100 recommended)")
    needs_train = "int8" in quantizations or "qat" in quantizations or (
        prune is not None and prune.finetune is not None)
    if needs_train and train_source is None:
        raise ValueError("int8, qat and pruning fine-tuning need a training data source")
    if (options.parity_images or options.eval_images) and eval_source is None:
        raise ValueError("parity and evaluation need a validation data source")
    for what, source in (("training", train_source), ("validation", eval_source)):
        if source is not None and source.num_classes != config.num_classes:
            raise ValueError(f"the {what} data has {source.num_classes} classes, the model "
                             f"{config.num_classes}")
    if 0 < options.calibration_images < 100 and "int8" in quantizations:
        logging.warning("int8 calibration on %d images; >= 100 are recommended",
                        options.calibration_images)
    if "tflite" not in options.formats and options.quantizations != ("fp32",):
        logging.warning("--quantize %s ignored: it applies to TFLite, which is not among the "
                        "formats (SavedModel and ONNX are float32)",
                        ",".join(options.quantizations))


def _qat_model(float_model: tf_keras.Model, config: ICNetConfig, weights: WeightDict,
               options: ExportOptions, train_source: Source, calibration: SourceImages,
               summary: dict) -> tf_keras.Model:
    """Quantization-aware model at the export size: ranges calibrated, then fine-tuned."""
    crop = tuple(options.qat_crop_size or options.input_size)
    logging.info("QAT: building the quantization-aware model (TFMOT, ICNet QuantizeConfigs)")
    export_qat = quantization_aware_model(float_model)
    range_images = SourceImages(calibration.source, min(QAT_RANGE_IMAGES, len(calibration)),
                                options.input_size)
    calibrate_ranges(export_qat, float_model, range_images)
    summary.update({"steps": options.qat_steps, "crop_size": list(crop),
                    "batch_size": options.qat_batch_size, "objective": options.qat_loss,
                    "learning_rate": options.qat_learning_rate, "loss": None, "seconds": 0.0})
    if options.qat_steps == 0:
        logging.info("QAT: no fine-tuning steps; converting the calibrated model")
        return export_qat
    if crop == tuple(options.input_size):
        train_qat, crop_float = export_qat, float_model
    else:
        crop_float = build_inference_model(config, weights, crop)
        train_qat = quantization_aware_model(crop_float)
        transfer_qat_weights(export_qat, train_qat)
    batches = train_dataset(train_source, crop, options.qat_batch_size, random_scale=False,
                            random_mirror=True, seed=options.seed)
    logging.info("QAT: fine-tuning %d steps at %dx%d, batch %d", options.qat_steps, *crop,
                 options.qat_batch_size)
    teacher = crop_float if options.qat_loss == "distill" else None
    summary.update(finetune(train_qat, batches, options.qat_steps, config.num_classes,
                            teacher, options.qat_learning_rate))
    if train_qat is not export_qat:
        transfer_qat_weights(train_qat, export_qat)
    return export_qat


def _write_artifacts(staging: Staging, options: ExportOptions, model: tf_keras.Model,
                     config: ICNetConfig, weights: WeightDict, train_source: Source | None,
                     report: dict) -> dict[str, Runner]:
    """Writes one model's artifacts (named after `options.model_name`) into the staging dir.

    Appends an entry per artifact to `report["artifacts"]` and returns a runner per artifact.
    """
    runners = {}

    def add(relative: str, fmt: str, quantization: str, runner: Runner, **extra) -> None:
        entry = {"path": relative, "model": options.model_name, "format": fmt,
                 "quantization": quantization,
                 "size_bytes": size_on_disk(staging.path(relative)), **extra}
        report["artifacts"].append(entry)
        runners[relative] = runner
        logging.info("export: wrote %s (%d bytes)", relative, entry["size_bytes"])

    if "saved_model" in options.formats:
        relative = options.saved_model_path()
        path = staging.path(relative)
        logging.info("export: %s SavedModel with signatures %s, %s", options.model_name,
                     serving.DEFAULT_SIGNATURE, serving.BYTES_SIGNATURE)
        module = serving.ICNetServingModule(model, options.max_image_pixels)
        serving.save(module, path)
        serving.write_warmup(module, path, options.model_name)
        config.save(os.path.join(path, "assets.extra", PLAN_FILENAME))
        add(relative, "saved_model", "fp32", SavedModelRunner(path),
            signatures=[serving.DEFAULT_SIGNATURE, serving.BYTES_SIGNATURE])

    if "onnx" in options.formats:
        relative = options.onnx_path()
        logging.info("export: %s ONNX (tf2onnx, opset %d, explicit resize sizes)",
                     options.model_name, options.onnx_opset)
        module = serving.ICNetServingModule(model, options.max_image_pixels)
        onnx_writer.write(onnx_writer.convert(module.serve_images, options.onnx_opset),
                          staging.path(relative))
        add(relative, "onnx", "fp32", OnnxRunner(staging.path(relative), options.threads),
            opset=options.onnx_opset)

    calibration = SourceImages(train_source, options.calibration_images,
                               options.input_size) if train_source is not None else None
    for quantization in options.tflite_quantizations:
        relative = options.tflite_path(quantization)
        spec = quantization_spec(quantization)
        logging.info("export: %s TFLite %s (%s)", options.model_name, quantization,
                     spec.description)
        source_model = model
        if spec.quantization_aware:
            report["qat"] = {}
            source_model = _qat_model(model, config, weights, options, train_source,
                                      calibration, report["qat"])
        elif spec.calibrated:
            logging.info("export: calibrating int8 on %d %s training images",
                         len(calibration), train_source.name)
        content = tflite_writer.convert(source_model, options.input_size, quantization,
                                        calibration if spec.calibrated else None)
        tflite_writer.write(content, staging.path(relative))
        extra = {"input_dtype": "uint8" if spec.integer_only else "float32",
                 "calibration_images": len(calibration) if spec.calibrated else 0}
        if options.gpu_check:
            verdict = tflite_writer.gpu_compatibility(content)
            extra.update(gpu_compatible=verdict.compatible,
                         gpu_problems=list(verdict.problems))
            logging.info("export: %s GPU delegate: %s", relative,
                         "compatible" if verdict.compatible else
                         f"NOT compatible ({len(verdict.problems)} problems)")
        add(relative, "tflite", quantization,
            TFLiteRunner(staging.path(relative), options.threads), **extra)
    return runners


def _remove_replaced_artifacts(export_dir: str, targets: list[str], source: str) -> None:
    """After an --overwrite export, removes what the export it replaced wrote and this one did
    not (other models, quantizations, formats): an export directory holds one export, the one
    its report lists. Other SavedModel versions of a model this export writes a SavedModel for
    stay (that model's TF Serving version history), and so does anything holding `source`,
    the model just exported. Symlinked folders are not entered; a failed removal is logged."""
    keep = {os.path.normpath(t) for t in targets}
    versioned = {Path(t).parts[1] for t in keep if Path(t).parts[0] == "saved_model"}
    stale = [os.path.join(kind, name) for kind in ("tflite", "onnx")
             for name in _real_listdir(export_dir, kind) if name.endswith(f".{kind}")]
    stale += [os.path.join("saved_model", model, version)
              for model in _real_listdir(export_dir, "saved_model") if model not in versioned
              for version in _real_listdir(export_dir, os.path.join("saved_model", model))
              if version.isdigit()]
    stale.append(PRUNED_DIRNAME)
    for relative in stale:
        path = os.path.join(export_dir, relative)
        if relative in keep or not os.path.lexists(path):
            continue
        if holds(path, source):
            logging.info("export: keeping %s of the replaced export: it holds the source model",
                         relative)
            continue
        logging.info("export: removing %s of the replaced export", relative)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            parent = os.path.dirname(relative)
            while parent and not os.listdir(os.path.join(export_dir, parent)):
                os.rmdir(os.path.join(export_dir, parent))
                parent = os.path.dirname(parent)
        except OSError as e:
            logging.warning("export: could not remove %s of the replaced export: %s", path, e)


def _real_listdir(export_dir: str, relative: str) -> list[str]:
    """Entries of export_dir/relative; none when it is missing or any part is a symlink."""
    parts = Path(relative).parts
    if any(os.path.islink(os.path.join(export_dir, *parts[:n + 1])) for n in range(len(parts))):
        return []
    path = os.path.join(export_dir, relative)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _source_path(model_path: str) -> str:
    """The real path of what `model_path` is read from: the .npy file or the model dir."""
    return os.path.realpath(model_path if model_path.endswith(".npy")
                            else model_dir_of(model_path))


def _check_source_is_safe(model_path: str, source: str, export_dir: str,
                          targets: list[str]) -> None:
    """Refuses an export that would replace the model it exports (`source`, its real path)
    or write files into its model directory (an export into a subfolder of it is fine)."""
    for target in targets:
        path = os.path.join(export_dir, target)
        if holds(path, source) or os.path.dirname(os.path.realpath(path)) == source:
            raise ValueError(f"--export_dir {export_dir}: writing {target} there would replace "
                             f"the source model {model_path} or write into its directory; "
                             f"choose another --export_dir")


def _is_pruned(model_path: str) -> bool:
    """Whether `model_path` is the output of deploy.prune (its directory has a prune report)."""
    if model_path.endswith(".npy"):
        return False
    return os.path.isfile(os.path.join(model_dir_of(model_path), prune_lib.REPORT_FILENAME))


def _model_summary(model: tf_keras.Model, config: ICNetConfig, options: ExportOptions,
                   pruned: bool) -> dict:
    flops = count_flops(model, options.input_size)
    return {"num_classes": config.num_classes, "params": int(model.count_params()),
            "flops": flops, "gflops": round(flops / 1e9, 3), "pruned": pruned,
            "plan": dict(config.plan)}


def _verify(exported: dict[str, tuple[KerasRunner, dict[str, Runner]]], options: ExportOptions,
            eval_source: Source | None, report: dict) -> None:
    """Parity of every artifact against its own model's fp32 Keras model, then the mIoU of
    every model and artifact in one pass over the val images."""
    artifacts = {entry["path"]: entry for entry in report["artifacts"]}
    if options.parity_images:
        images = SourceImages(eval_source, options.parity_images, options.input_size)
        report["parity_images"] = len(images)
        for name, (reference, runners) in exported.items():
            logging.info("export: parity of %d %s artifacts on %d %s/%s images", len(runners),
                         name, len(images), eval_source.name, eval_source.split)
            for relative, result in compare_runners(reference, runners, images).items():
                artifacts[relative].update(result)
    if not options.eval_images:
        return
    everything = {}
    for name, (reference, runners) in exported.items():
        everything[f"keras:{name}"] = reference
        everything.update(runners)
    logging.info("export: mIoU of %d fp32 Keras models and %d artifacts on %d images",
                 len(exported), len(everything) - len(exported),
                 min(options.eval_images, len(eval_source)))
    results = evaluate_runners(everything, eval_source, options.eval_images)
    for name in exported:
        reference = results.pop(f"keras:{name}")
        report["models"][name]["reference"] = {"format": "keras", "quantization": "fp32",
                                               **reference}
        report["eval_images"] = reference["eval_images"]
    for relative, result in results.items():
        entry = artifacts[relative]
        entry.update(result)
        entry["miou_delta"] = result["miou"] - report["models"][entry["model"]]["reference"][
            "miou"]


def export(model_path: str, options: ExportOptions, train_source: Source | None = None,
           eval_source: Source | None = None, prune: PruneOptions | None = None) -> dict:
    """Exports (and optionally first prunes) a model; returns the report.

    With `prune`, the pruned model is exported as `options.model_name` in every format and
    quantization, and (unless `options.export_unpruned` is False) the source model as
    `<model_name>_unpruned` in every format at fp32, both verified, side by side in the report.

    Args:
      model_path: a model dir (checkpoint + plan.json), checkpoint prefix or reference `.npy`.
      options: what to export and how to verify it.
      train_source: training data for int8 calibration, QAT and pruning fine-tuning.
      eval_source: validation data for parity and mIoU.
      prune: prune with `deploy.prune.prune_model_dir` first (the pruned model dir is
        exported too).

    Returns:
      The report also written to `export_report.json`.

    Raises:
      FileExistsError: an artifact exists and not `options.overwrite` (nothing is written).
      ValueError, FileNotFoundError: bad options, model or data.
    """
    begin = time.time()
    config, weights = load_weights(model_path)
    _check_data(options, config, train_source, eval_source, prune)
    unpruned = options.unpruned() if prune is not None and options.export_unpruned else None
    targets = _targets(options, prune is not None, unpruned)
    source = _source_path(model_path)
    _check_source_is_safe(model_path, source, options.export_dir, targets)
    staging = Staging(options.export_dir, targets, options.overwrite)
    with staging:
        logging.info("export: staging in %s", staging.root)
        report = {"model_name": options.model_name, "version": options.version,
                  "source": model_path, "input_size": list(options.input_size),
                  "parity_images": 0, "eval_images": 0, "models": {}, "artifacts": [],
                  "data": {"train": getattr(train_source, "name", None),
                           "eval": getattr(eval_source, "name", None)}}
        exported = {}
        if unpruned is not None:
            source_config, source_weights = merged(config, weights)
            logging.info("export: building the unpruned fp32 model at %dx%d",
                         *options.input_size)
            source_model = build_inference_model(source_config, source_weights,
                                                 options.input_size)
            report["models"][unpruned.model_name] = _model_summary(
                source_model, source_config, options, pruned=False)
            runners = _write_artifacts(staging, unpruned, source_model, source_config,
                                       source_weights, train_source, report)
            exported[unpruned.model_name] = (KerasRunner(source_model), runners)
        if prune is not None:
            pruned_dir = staging.path(PRUNED_DIRNAME)
            logging.info("export: pruning %s (schedule %s) into %s", model_path,
                         list(prune.schedule), pruned_dir)
            report["prune"] = prune_lib.prune_model_dir(
                model_path, pruned_dir, prune.schedule, overrides=prune.overrides,
                keep_plan=prune.keep_plan, round_to=prune.round_to, finetune=prune.finetune,
                train_source=train_source, eval_source=eval_source,
                # Both models' mIoU is measured below when the unpruned one is exported too.
                eval_images=0 if unpruned is not None else options.eval_images,
                export_size=options.input_size)
            report["prune"]["output"] = report["pruned_model_dir"] = PRUNED_DIRNAME
            config, weights = load_weights(pruned_dir)
        config, weights = merged(config, weights)
        config.save(staging.path(PLAN_FILENAME))

        logging.info("export: building the fp32 model at %dx%d", *options.input_size)
        model = build_inference_model(config, weights, options.input_size)
        report["models"][options.model_name] = _model_summary(
            model, config, options, pruned=prune is not None or _is_pruned(model_path))
        runners = _write_artifacts(staging, options, model, config, weights, train_source,
                                   report)
        exported[options.model_name] = (KerasRunner(model), runners)
        _verify(exported, options, eval_source, report)
        report["seconds"] = round(time.time() - begin, 1)
        report_lib.write(report, staging.root)
        logging.info("export: publishing into %s", options.export_dir)
        staging.publish()
    if options.overwrite:
        _remove_replaced_artifacts(staging.export_dir, staging.targets, source)
    for entry in report["artifacts"]:
        logging.info("export: %-40s %10d bytes  agreement %s  mIoU %s", entry["path"],
                     entry["size_bytes"], entry.get("argmax_agreement"), entry.get("miou"))
    logging.info("export: done in %.1f s; report %s", time.time() - begin,
                 os.path.join(options.export_dir, report_lib.JSON_NAME))
    return report


# --------------------------------------------------------------------------------------------
# The binary. Its flags are defined only when it runs (importing this module defines none, so
# tests and other binaries can import it). Pruning and dataset flags carry deploy.prune's names.


def define_flags() -> None:
    """Defines the binary's flags."""
    # The model and the export.
    flags.DEFINE_string("model_dir", None, "Model dir (checkpoint + plan.json) or checkpoint "
                        "prefix to export.")
    flags.DEFINE_string("weights", None, "Reference .npy weights (instead of --model_dir).")
    flags.DEFINE_string("export_dir", None, "Output directory.")
    flags.DEFINE_string("model_name", "icnet", "TF Serving model name and artifact file stem.")
    flags.DEFINE_integer("version", 1, "TF Serving version number.")
    flags.DEFINE_bool("overwrite", False, "Replace the export in --export_dir: its artifacts "
                      "that this export does not write are removed, except other SavedModel "
                      "versions of the models it writes.")
    flags.DEFINE_string("input_size", "1025x2049", "HxW of every artifact's input.")
    flags.DEFINE_string("formats", ",".join(FORMATS),
                        f"Comma-separated subset of {','.join(FORMATS)}.")
    flags.DEFINE_string("quantize", "fp32,fp16,dynamic,int8",
                        f"Comma-separated TFLite quantizations: {','.join(QUANTIZATIONS)}.")
    flags.DEFINE_integer("onnx_opset", onnx_writer.DEFAULT_OPSET,
                         f"ONNX opset ({onnx_writer.OPSETS.start}-{onnx_writer.OPSETS.stop - 1}).")
    flags.DEFINE_integer("max_image_pixels", MAX_IMAGE_PIXELS,
                         "Largest image (H*W) serve_image_bytes accepts.")
    # Verification.
    flags.DEFINE_integer("parity_images", 20,
                         "Val images for logit parity against the fp32 Keras model.")
    flags.DEFINE_integer("eval_images", 100, "Val images for the mIoU of every artifact (and "
                         "of the model before and after pruning); 0 skips.")
    flags.DEFINE_integer("threads", 2, "TFLite/ONNX Runtime threads during verification.")
    flags.DEFINE_bool("gpu_check", True, "Run the TFLite Analyzer's GPU-delegate check.")
    # Quantization.
    flags.DEFINE_integer("calibration_images", 100, "Training images for int8 calibration "
                         "(and the first 16 for the QAT ranges).")
    flags.DEFINE_integer("qat_steps", 200, "Quantization-aware fine-tuning steps.")
    flags.DEFINE_integer("qat_batch_size", 2, "QAT batch size.")
    flags.DEFINE_float("qat_learning_rate", 2e-6, "QAT base learning rate (Adam, poly decay); "
                       "BN-merged ICNets diverge above about 1e-5.")
    flags.DEFINE_enum("qat_loss", "distill", list(QAT_LOSSES), "QAT objective: distill the "
                      "fp32 model's softmax, or cross-entropy on the labels.")
    flags.DEFINE_string("qat_crop_size", None, "QAT crop HxW (default: --input_size).")
    # Pruning (deploy.prune) before the export; its fine-tuning uses the training flags.
    flags.DEFINE_bool("prune", False, "Prune first with deploy.prune; the pruned model dir is "
                      "exported as pruned_model/.")
    flags.DEFINE_bool("export_unpruned", True, "With --prune, also export the source model "
                      "(fp32, every format) as <model_name>_unpruned, side by side.")
    flags.DEFINE_float("keep", None, "Fraction of every group's channels to keep, one shot "
                       "(default 0.5 unless --schedule or --keep_plan).")
    flags.DEFINE_string("schedule", None, "Progressive keeps of the ORIGINAL widths, e.g. "
                        "0.75,0.5.")
    flags.DEFINE_string("keep_overrides", None, "Per-prefix keeps, e.g. conv5=0.6,sub1=1.0.")
    flags.DEFINE_string("keep_plan", None, "A plan.json with the target widths.")
    flags.DEFINE_integer("round_to", 1, "Round kept widths up to a multiple of this.")
    flags.DEFINE_integer("finetune_steps", 0, "Training steps after each pruning stage.")
    # Data (here --synthetic_size defaults to --input_size) and training, as train.train
    # names them.
    define_data_flags()
    global _PRUNE_ONLY_FLAGS
    _PRUNE_ONLY_FLAGS = ("export_unpruned", "keep", "schedule", "keep_overrides", "keep_plan",
                         "round_to", "finetune_steps",
                         *define_training_flags(learning_rate=5e-4))
    flags.FLAGS.set_default("synthetic_size", None)
    flags.FLAGS["synthetic_size"].help = "HxW of the synthetic scenes (default: --input_size)."


FLAGS = flags.FLAGS
# The flags that mean something only with --prune (set by define_flags): pruning, and the
# training flags of its fine-tuning.
_PRUNE_ONLY_FLAGS: tuple[str, ...] = ()
QAT_ONLY_FLAGS = ("qat_steps", "qat_batch_size", "qat_learning_rate", "qat_loss",
                  "qat_crop_size")


def _parse_prune(train_source: Source) -> PruneOptions:
    schedule, keep_plan, overrides = prune_lib.schedule_from_flags()
    if FLAGS.finetune_steps < 0:
        raise ValueError(f"--finetune_steps must be >= 0, got {FLAGS.finetune_steps}")
    finetune_options = (train_options_from_flags("", FLAGS.finetune_steps, train_source)
                        if FLAGS.finetune_steps > 0 else None)
    return PruneOptions(schedule=schedule, overrides=tuple(overrides), keep_plan=keep_plan,
                        round_to=FLAGS.round_to, finetune=finetune_options)


def main(argv):
    del argv
    from icnet.cli import parse_choices, parse_size

    try:
        if bool(FLAGS.model_dir) == bool(FLAGS.weights):
            raise ValueError("give exactly one of --model_dir and --weights")
        if not FLAGS.export_dir:
            raise ValueError("--export_dir is required")
        ignored = [f"--{name}" for name in _PRUNE_ONLY_FLAGS if FLAGS[name].present]
        if ignored and not FLAGS.prune:
            raise ValueError(f"{', '.join(ignored)}: only used with --prune")
        quantizations = parse_choices(FLAGS.quantize, QUANTIZATIONS, "quantize")
        formats = parse_choices(FLAGS.formats, FORMATS, "formats")
        ignored = [f"--{name}" for name in QAT_ONLY_FLAGS if FLAGS[name].present]
        if ignored and ("qat" not in quantizations or "tflite" not in formats):
            raise ValueError(f"{', '.join(ignored)}: only used with qat in --quantize and "
                             f"tflite in --formats")
        input_size = parse_size(FLAGS.input_size, "input_size", MIN_INPUT_SIZE)
        options = ExportOptions(
            export_dir=FLAGS.export_dir, model_name=FLAGS.model_name, version=FLAGS.version,
            input_size=input_size, formats=formats,
            quantizations=quantizations, overwrite=FLAGS.overwrite,
            parity_images=FLAGS.parity_images, eval_images=FLAGS.eval_images,
            calibration_images=FLAGS.calibration_images, qat_steps=FLAGS.qat_steps,
            qat_batch_size=FLAGS.qat_batch_size, qat_learning_rate=FLAGS.qat_learning_rate,
            qat_loss=FLAGS.qat_loss,
            qat_crop_size=(parse_size(FLAGS.qat_crop_size, "qat_crop_size", MIN_INPUT_SIZE)
                           if FLAGS.qat_crop_size else None),
            onnx_opset=FLAGS.onnx_opset, threads=FLAGS.threads or None,
            max_image_pixels=FLAGS.max_image_pixels, gpu_check=FLAGS.gpu_check,
            seed=FLAGS.seed, export_unpruned=FLAGS.export_unpruned)
        if not FLAGS.synthetic_size:
            FLAGS.synthetic_size = FLAGS.input_size
        tf_keras.utils.set_random_seed(FLAGS.seed)
        train_source = source_from_flags("train")
        eval_source = source_from_flags("val")
        prune = _parse_prune(train_source) if FLAGS.prune else None
        report = export(FLAGS.model_dir or FLAGS.weights, options, train_source, eval_source,
                        prune)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        sys.exit(f"error: {e}")
    except (TrainingDiverged, TrainingInterrupted, FloatingPointError) as e:
        logging.error("%s (nothing was published to %s)", e, FLAGS.export_dir)
        sys.exit(1)
    print(report_lib.markdown(report))


if __name__ == "__main__":
    define_flags()
    app.run(main)
