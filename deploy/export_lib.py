"""deploy.export's work: a trained ICNet as a TF Serving SavedModel, TFLite flatbuffers and
ONNX, each verified under every runtime that runs it, with a typed report.

`export(model, options, ...)` (optionally pruning first) writes the whole export into a
staging directory beside `options.export_dir` and publishes it in one step
(`deploy.staging`): after a crash at any moment the export directory holds the old export or
the new one, never a mix. With `overwrite`, the other SavedModel versions of every model it
writes a SavedModel for are kept (TF Serving's version history); everything else of the old
export is replaced. The layout is `deploy.layout`'s; the report `deploy.report.ExportReport`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
import tf_keras
from absl import logging

from deploy import (layout, mediapipe_check, onnx_writer, openvino_writer, runtimes, serving,
                    tflite_metadata, tflite_writer, vulkan)
from deploy.gpu_session import GpuWorkerSession
from deploy.latency_table import Target, time_tflite
from deploy.prune_lib import PruneOptions, prune_into, work_dir_for
from deploy.quantize import (QAT_LOSSES, calibrate_ranges, finetune,
                             quantization_aware_model, quantization_spec, transfer_qat_weights)
from deploy.report import (Accuracy, ArtifactReport, ExportReport, GpuCheck, MediaPipeCheck,
                           ModelReport,
                           PruneReport, QatReport, Verification)
from deploy.runtimes import Unavailable, for_format
from deploy.runtimes.tensorflow import KerasSession
from deploy.staging import Staging
from deploy.segment import class_ids
from deploy.verify import SourceImages, verify_sessions
from icnet import cpu
from icnet.checkpoint import model_dir_of
from icnet.config import ICNetConfig
from icnet.data import Source, class_names_for, train_dataset
from icnet.exits import FloorFailed, OptionError
from icnet.fileio import holds
from icnet.image_io import MAX_IMAGE_PIXELS
from icnet.inference import build_inference_model, load_weights, merged
from icnet.model import MIN_INPUT_SIZE
from icnet.profiling import count_flops
from icnet.weights import WeightDict

GPU_CHECKS = ("analyzer", "run", "none")
QAT_RANGE_IMAGES = 16  # calibration images that initialise the QAT activation ranges


def default_qat_crop(input_size: tuple[int, int]) -> tuple[int, int]:
    """QAT's crop: half a 32k+1 export size that halves to a 32k+1 size of at least the
    smallest input (1025x2049 -> 513x1025, the same graph at a quarter of the cost), else the
    export size itself."""
    halves = tuple((n - 1) // 2 + 1 for n in input_size)
    if all((n - 1) % 64 == 0 for n in input_size) and min(halves) >= MIN_INPUT_SIZE:
        return halves
    return tuple(input_size)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Everything an export needs besides the model and the data.

    Attributes:
      export_dir: where the export goes (see deploy.layout for its layout).
      model_name: TF Serving model name and artifact file stem.
      version: TF Serving version number (a positive integer).
      input_size: (H, W) of every artifact's input.
      formats: subset of deploy.layout.FORMATS.
      quantizations: quantizations to write (deploy.layout.QUANTIZATIONS; each in the formats
        that take it: every one in TFLite, int8 also in ONNX).
      overwrite: replace an existing export.
      parity_images: val images for the logit parity against the fp32 Keras model.
      eval_images: val images for the mIoU of every artifact (0: skip).
      calibration_images: training images for int8 calibration (>= 100 recommended).
      qat_steps: quantization-aware fine-tuning steps.
      qat_batch_size: its batch size.
      qat_learning_rate: its base learning rate (Adam, poly decay to 0).
      qat_loss: "distill" (match the fp32 model's softmax) or "labels" (cross-entropy).
      qat_crop_size: its crop size (None: `default_qat_crop`); it must build the same graph
        as the export size (32k+1 if the export size is).
      onnx_opset: ONNX opset.
      threads: threads of the runtimes during verification (None: every core).
      max_image_pixels: largest image `serve_image_bytes` decodes.
      gpu_check: the GPU-delegate check of every .tflite: "analyzer" (the TFLite Analyzer's
        op check), "run" (that, and `gpu_images` val images through LiteRT's GPU accelerator
        on a Vulkan device, against the fp32 Keras model) or "none".
      gpu_images: val images of the "run" check (a software device takes seconds per image).
      seed: seed of the QAT data order.
      export_unpruned: when pruning, also export the source model (fp32, every format) as
        `<model_name>_unpruned`, for comparison (with the pruning's `control`, the
        equal-budget control instead: the source fine-tuned as long as the pruned model).
      min_agreement: the argmax agreement every (artifact, runtime) must keep with its fp32
        model; None: `default_min_agreement`.
      max_miou_drop: the mIoU (a fraction) it may lose against its fp32 model.
      floors: raise `icnet.exits.FloorFailed` (after publishing the export, whose report
        marks them) when some fall below; False only marks them.
    """

    export_dir: str
    model_name: str = "icnet"
    version: int = 1
    input_size: tuple[int, int] = (1025, 2049)
    formats: tuple[str, ...] = layout.FORMATS
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
    threads: int | None = None
    max_image_pixels: int = MAX_IMAGE_PIXELS
    gpu_check: str = "analyzer"
    gpu_images: int = 2
    seed: int = 0
    export_unpruned: bool = True
    min_agreement: float | None = None
    max_miou_drop: float = 0.01
    floors: bool = True

    def __post_init__(self):
        try:
            layout.check_model_name(self.model_name)
        except ValueError as e:
            raise OptionError("model_name", str(e)) from None
        if self.version < 1:
            raise OptionError("version", f"must be a positive integer, got {self.version}")
        if min(self.input_size) < MIN_INPUT_SIZE:
            raise OptionError("input_size", f"must be at least {MIN_INPUT_SIZE}x"
                              f"{MIN_INPUT_SIZE}, got {self.input_size[0]}x{self.input_size[1]}")
        unknown = [f for f in self.formats if f not in layout.FORMATS]
        if unknown or not self.formats:
            raise OptionError("formats", f"unknown or none {unknown}; choose from "
                                         f"{', '.join(layout.FORMATS)}")
        for name in self.quantizations:
            try:
                quantization_spec(name)
            except ValueError as e:
                raise OptionError("quantize", str(e)) from None
        if "tflite" in self.formats and not self.quantizations:
            raise OptionError("quantize", "TFLite export needs at least one quantization")
        if self.gpu_check not in GPU_CHECKS:
            raise OptionError("gpu_check", f"must be one of {', '.join(GPU_CHECKS)}, got "
                                           f"{self.gpu_check!r}")
        if self.gpu_check == "run" and "tflite" not in self.formats:
            raise OptionError("gpu_check", "run needs tflite in --formats")
        if self.gpu_check == "run" and self.gpu_images < 1:
            raise OptionError("gpu_images", f"must be >= 1 with gpu_check run, got "
                                            f"{self.gpu_images}")
        for name in ("parity_images", "eval_images", "calibration_images", "qat_steps"):
            if getattr(self, name) < 0:
                raise OptionError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.qat_loss not in QAT_LOSSES:
            raise OptionError("qat_loss", f"must be one of {QAT_LOSSES}, got {self.qat_loss!r}")
        if self.qat_batch_size < 1:
            raise OptionError("qat_batch_size", f"must be >= 1, got {self.qat_batch_size}")
        if self.qat_learning_rate <= 0:
            raise OptionError("qat_learning_rate", f"must be > 0, got {self.qat_learning_rate}")
        if self.qat_crop_size is not None and min(self.qat_crop_size) < MIN_INPUT_SIZE:
            raise OptionError("qat_crop_size", f"must be at least {MIN_INPUT_SIZE}x"
                                               f"{MIN_INPUT_SIZE}")
        if self.onnx_opset not in onnx_writer.OPSETS:
            raise OptionError("onnx_opset", f"must be {onnx_writer.OPSETS.start}-"
                                            f"{onnx_writer.OPSETS.stop - 1}, got {self.onnx_opset}")
        if self.threads is not None and self.threads < 1:
            raise OptionError("threads", f"must be >= 1 (or unset), got {self.threads}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise OptionError("min_agreement", f"must be a fraction in [0, 1], got "
                                               f"{self.min_agreement}")
        if self.max_miou_drop < 0:
            raise OptionError("max_miou_drop", f"must be >= 0, got {self.max_miou_drop}")
        if self.max_image_pixels < serving.WARMUP_PNG_SIDE ** 2:
            raise OptionError("max_image_pixels", f"must be at least "
                              f"{serving.WARMUP_PNG_SIDE ** 2} (the {serving.WARMUP_PNG_SIDE}x"
                              f"{serving.WARMUP_PNG_SIDE} warmup PNG), got "
                              f"{self.max_image_pixels}")

    def artifacts(self) -> list[tuple[str, str]]:
        """(format, quantization) of every artifact of one model, in writing order: the
        SavedModel, ONNX and OpenVINO always at fp32 (ONNX and OpenVINO also at int8 when
        asked), TFLite at every quantization asked for."""
        result = []
        for fmt in ("saved_model", "onnx", "openvino", "tflite"):
            if fmt in self.formats:
                wanted = self.quantizations if fmt == "tflite" else ("fp32", *self.quantizations)
                result += [(fmt, q) for q in dict.fromkeys(wanted)
                           if q in layout.FORMAT_QUANTIZATIONS[fmt]]
        return result

    def unpruned(self) -> "ExportOptions":
        """The options of the unpruned source model's export: fp32 only, its own name."""
        return dataclasses.replace(self, model_name=f"{self.model_name}{layout.UNPRUNED_SUFFIX}",
                                   quantizations=("fp32",))

    def path(self, fmt: str, quantization: str = "fp32") -> str:
        return layout.artifact_path(self.model_name, fmt, quantization, self.version)


def _check_data(options: ExportOptions, config: ICNetConfig, train_source: Source | None,
                eval_source: Source | None, prune: PruneOptions | None) -> None:
    """Fails before any work when the data cannot serve what the options ask for."""
    calibrated = [q for f, q in options.artifacts() if q in ("int8", "qat")]
    if calibrated and options.calibration_images < 1:
        raise OptionError("calibration_images", f"{calibrated[0]} needs calibration images "
                                                f"(>= 1; >= 100 recommended)")
    needs_train = bool(calibrated) or (prune is not None and prune.finetune is not None)
    if needs_train and train_source is None:
        raise ValueError("int8, qat and pruning fine-tuning need a training data source")
    if (options.parity_images or options.eval_images) and eval_source is None:
        raise ValueError("parity and evaluation need a validation data source")
    if options.gpu_check == "run":
        if eval_source is None:
            raise ValueError("--gpu_check run needs a validation data source")
        try:
            logging.info("export: GPU check on %s", vulkan.devices()[0].describe())
        except vulkan.NoVulkanDevice as e:
            raise OptionError("gpu_check", f"run needs a Vulkan device: {e}") from None
    for what, source in (("training", train_source), ("validation", eval_source)):
        if source is not None and source.num_classes != config.num_classes:
            raise ValueError(f"the {what} data has {source.num_classes} classes, the model "
                             f"{config.num_classes}")
    if 0 < options.calibration_images < 100 and calibrated:
        logging.warning("int8 calibration on %d images; >= 100 are recommended",
                        options.calibration_images)
    written = {q for _, q in options.artifacts()}
    ignored = [q for q in options.quantizations if q not in written]
    if ignored:
        logging.warning("quantizations %s are written by none of the formats %s",
                        ",".join(ignored), ",".join(options.formats))


def _qat_model(float_model: tf_keras.Model, config: ICNetConfig, weights: WeightDict,
               options: ExportOptions, train_source: Source,
               calibration: SourceImages) -> tuple[tf_keras.Model, QatReport]:
    """Quantization-aware model at the export size: ranges calibrated, then fine-tuned."""
    crop = tuple(options.qat_crop_size or default_qat_crop(options.input_size))
    logging.info("QAT: building the quantization-aware model (TFMOT, ICNet QuantizeConfigs)")
    export_qat = quantization_aware_model(float_model)
    range_images = SourceImages(calibration.source, min(QAT_RANGE_IMAGES, len(calibration)),
                                options.input_size)
    calibrate_ranges(export_qat, float_model, range_images)
    report = QatReport(steps=options.qat_steps, crop_size=list(crop),
                       batch_size=options.qat_batch_size, objective=options.qat_loss,
                       learning_rate=options.qat_learning_rate)
    if options.qat_steps == 0:
        logging.info("QAT: no fine-tuning steps; converting the calibrated model")
        return export_qat, report
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
    result = finetune(train_qat, batches, options.qat_steps, config.num_classes, teacher,
                      options.qat_learning_rate, batch_size=options.qat_batch_size)
    report.loss, report.seconds = result["loss"], result["seconds"]
    if train_qat is not export_qat:
        transfer_qat_weights(train_qat, export_qat)
    return export_qat, report


class _Writer:
    """Writes one model's artifacts into the staging directory and describes them."""

    def __init__(self, staging: Staging, options: ExportOptions, train_source: Source | None,
                 scratch: str):
        self.staging, self.options, self.scratch = staging, options, scratch
        self.calibration = (SourceImages(train_source, options.calibration_images,
                                         options.input_size) if train_source else None)
        self.train_source = train_source
        self.labels: tuple[str, ...] = ()  # the class names of the model being written
        self.qat: QatReport | None = None
        self._openvino_fp32 = {}

    def write(self, options: ExportOptions, model: tf_keras.Model, config: ICNetConfig,
              weights: WeightDict) -> list[ArtifactReport]:
        artifacts = []
        self.labels = class_names(config.num_classes, self.train_source)
        for fmt, quantization in options.artifacts():
            relative = options.path(fmt, quantization)
            path = self.staging.path(relative)
            logging.info("export: %s %s %s", options.model_name, fmt, quantization)
            artifact = ArtifactReport(path=relative, model=options.model_name, format=fmt,
                                      quantization=quantization, size_bytes=0)
            getattr(self, f"_{fmt}")(artifact, path, options, model, config, weights)
            artifact.size_bytes = layout.artifact_size(path)
            logging.info("export: wrote %s (%d bytes)", relative, artifact.size_bytes)
            artifacts.append(artifact)
        return artifacts

    def _calibrated(self, artifact: ArtifactReport) -> SourceImages | None:
        """The calibration images of an integer artifact (logged), else None."""
        if artifact.quantization != "int8":
            return None
        logging.info("export: calibrating %s on %d %s training images", artifact.path,
                     len(self.calibration), self.train_source.name)
        artifact.calibration_images = len(self.calibration)
        return self.calibration

    def _saved_model(self, artifact, path, options, model, config, weights) -> None:
        module = serving.ICNetServingModule(model, options.max_image_pixels)
        serving.save(module, path)
        serving.write_warmup(module, path, options.model_name)
        config.save(os.path.join(path, "assets.extra", layout.PLAN_FILENAME))
        artifact.details["signatures"] = [serving.DEFAULT_SIGNATURE, serving.BYTES_SIGNATURE]

    def _fp32_onnx(self, options, model) -> str:
        """The model's fp32 ONNX file: the staged artifact, or a scratch copy when the export
        writes no ONNX."""
        if "onnx" in options.formats:
            return self.staging.path(options.path("onnx"))
        path = os.path.join(self.scratch, f"{options.model_name}.onnx")
        if not os.path.isfile(path):
            module = serving.ICNetServingModule(model, options.max_image_pixels)
            onnx_writer.write(onnx_writer.convert(module.serve_images, options.onnx_opset), path)
        return path

    def _onnx(self, artifact, path, options, model, config, weights) -> None:
        artifact.details["opset"] = options.onnx_opset
        calibration = self._calibrated(artifact)
        if calibration is not None:
            onnx_writer.quantize_int8(self._fp32_onnx(options, model), path, calibration,
                                      _seven_bit_weights(artifact))
            return
        module = serving.ICNetServingModule(model, options.max_image_pixels)
        onnx_writer.write(onnx_writer.convert(module.serve_images, options.onnx_opset), path)

    def _openvino(self, artifact, path, options, model, config, weights) -> None:
        if options.model_name not in self._openvino_fp32:
            self._openvino_fp32[options.model_name] = openvino_writer.convert(
                self._fp32_onnx(options, model), options.input_size)
        fp32 = self._openvino_fp32[options.model_name]
        calibration = self._calibrated(artifact)
        openvino_writer.write(fp32 if calibration is None
                              else openvino_writer.quantize_int8(
                                  fp32, calibration, _seven_bit_weights(artifact)), path)

    def _tflite(self, artifact, path, options, model, config, weights) -> None:
        spec = quantization_spec(artifact.quantization)
        source_model = model
        if spec.quantization_aware:
            source_model, self.qat = _qat_model(model, config, weights, options,
                                                self.train_source, self.calibration)
        calibration = self._calibrated(artifact)
        content = tflite_writer.convert(source_model, options.input_size, artifact.quantization,
                                        calibration)
        height, width = options.input_size
        content = tflite_metadata.add_metadata(
            content, self.labels, name=options.model_name, version=str(options.version),
            description=f"ICNet semantic segmentation, {artifact.quantization}, {height}x{width} "
                        f"RGB input, {len(self.labels)} classes")
        tflite_writer.write(content, path)
        artifact.input_dtype = "uint8" if spec.integer_only else "float32"
        if options.gpu_check != "none":
            verdict = tflite_writer.gpu_compatibility(content)
            artifact.gpu = GpuCheck("analyzer", verdict.compatible, list(verdict.problems))
            logging.info("export: %s GPU delegate: %s", artifact.path,
                         "compatible" if verdict.compatible else
                         f"NOT compatible ({len(verdict.problems)} problems)")


def _seven_bit_weights(artifact: ArtifactReport) -> bool:
    """Whether an int8 ONNX or OpenVINO artifact gets 7-bit weights: on an x86 CPU without VNNI
    their int8 kernels saturate otherwise. Recorded in the artifact's details."""
    seven_bit = cpu.int8_saturates()
    artifact.details["weight_bits"] = 7 if seven_bit else 8
    return seven_bit


def class_names(num_classes: int, source: Source | None) -> tuple[str, ...]:
    """The class names of the export's data (its labels file), else the dataset's by count."""
    if source is not None and len(source.class_names) == num_classes:
        return tuple(source.class_names)
    return class_names_for(num_classes)


def _mediapipe(report: ExportReport, staging: Staging, images: list, sessions: dict) -> None:
    """MediaPipe's ImageSegmenter on every .tflite: its category masks against the class ids
    the kit computes (under tflite_xnnpack), on the parity images."""
    python = mediapipe_check.mediapipe_python()
    for artifact in (a for a in report.artifacts if a.format == "tflite"):
        if python is None:
            artifact.mediapipe = MediaPipeCheck(None, note="no MediaPipe environment (make "
                                                           "mediapipe-env)")
            continue
        session = next(s for (path, _), s in sessions.items() if path == artifact.path)
        try:
            masks = mediapipe_check.category_masks(staging.path(artifact.path), images, python)
        except RuntimeError as e:
            artifact.mediapipe = MediaPipeCheck(None, note=str(e)[:300])
            logging.warning("export: %s", e)
            continue
        ours = np.stack([class_ids(session, image) for image in images])
        artifact.mediapipe = MediaPipeCheck(float(np.mean(masks == ours)), len(images))
        logging.info("export: %s under MediaPipe's ImageSegmenter: %.3f%% of the class ids",
                     artifact.path, 100 * artifact.mediapipe.agreement)


def _measured_here(report: ExportReport, unpruned: str) -> None:
    """The pruning's mIoUs from the verification: the pruned model's, and the equal-budget
    control's (the exported unpruned model) or else the source's."""
    pruned = report.models[report.model_name].reference
    other = report.models[unpruned].reference
    if pruned is None or other is None:
        return
    report.prune.final.measure.miou = pruned.miou
    if report.prune.control is not None:
        report.prune.control.miou = other.miou
    else:
        report.prune.original.miou = other.miou


def _model_report(model: tf_keras.Model, config: ICNetConfig, options: ExportOptions,
                  pruned: bool, note: str = "") -> ModelReport:
    flops = count_flops(model, options.input_size)
    return ModelReport(num_classes=config.num_classes, params=int(model.count_params()),
                       flops=flops, gflops=round(flops / 1e9, 3), pruned=pruned,
                       plan=dict(config.plan), note=note)


def _sessions(staging: Staging, artifacts: list[ArtifactReport], threads: int | None) -> dict:
    """(artifact path, runtime) -> session, for every verifying runtime available here."""
    sessions = {}
    for artifact in artifacts:
        for runtime in for_format(artifact.format):
            if not runtime.verifies:
                continue
            reason = runtime.available()
            if reason is None:
                try:
                    sessions[(artifact.path, runtime.name)] = runtime.open(
                        staging.path(artifact.path), threads)
                    continue
                except Unavailable as e:
                    reason = e.reason
            logging.info("export: %s not verified under %s: %s", artifact.path, runtime.name,
                         reason)
    return sessions


def _verify(report: ExportReport, references: dict[str, KerasSession], staging: Staging,
            options: ExportOptions, eval_source: Source | None) -> None:
    """Parity of every (artifact, runtime) against its own model's fp32 Keras model and the
    mIoU of every model and session, in one pass over the val images; then MediaPipe."""
    sessions = _sessions(staging, report.artifacts, options.threads or os.cpu_count())
    results = {key: Verification(runtime=key[1]) for key in sessions}
    if options.parity_images or options.eval_images:
        results = _measure(report, references, sessions, options, eval_source)
    if options.parity_images:
        _mediapipe(report, staging, list(SourceImages(eval_source, options.parity_images,
                                                      options.input_size)), sessions)
    for (path, _), verification in results.items():
        report.artifact(path).verifications.append(verification)
    if options.gpu_check == "run":
        _gpu_run(report, references, staging, options, eval_source)


def _gpu_run(report: ExportReport, references: dict[str, KerasSession], staging: Staging,
             options: ExportOptions, eval_source: Source) -> None:
    """Every .tflite through LiteRT's GPU accelerator (default precision: fp16 where the
    device has it, as on phones): logits and mIoU against its fp32 Keras model on the first
    `gpu_images` val images, and a verdict against `GPU_MIN_AGREEMENT`."""
    for artifact in (a for a in report.artifacts if a.format == "tflite"):
        check = artifact.gpu or GpuCheck("analyzer", None)
        check.method = "run"
        logging.info("export: %s on the GPU accelerator (%d images; a first run compiles "
                     "its shaders)", artifact.path, options.gpu_images)
        try:
            session = GpuWorkerSession(staging.path(artifact.path))
        except RuntimeError as e:
            check.safe, check.note = False, str(e)[:300]
            artifact.gpu = check
            logging.warning("export: %s", e)
            continue
        reference = ("keras", artifact.model)
        try:
            measured = verify_sessions({reference: references[artifact.model], "gpu": session},
                                       {"gpu": reference}, eval_source, options.gpu_images,
                                       options.gpu_images)
        except RuntimeError as e:
            measured = {"gpu": {}}
            check.safe, check.note = False, str(e)[:300]
        finally:
            session.close()
        values = measured["gpu"]
        if values:
            floor = GPU_MIN_AGREEMENT[artifact.quantization in ("fp32", "fp16")]
            check.device = session.device.describe()
            check.software_device = session.device.software
            check.images, check.max_abs_error = values["parity_images"], values["max_abs_error"]
            check.argmax_agreement, check.miou = values["argmax_agreement"], values["miou"]
            check.miou_delta = values["miou"] - measured[reference]["miou"]
            check.safe = check.argmax_agreement >= floor
            check.note = (f"argmax agreement {100 * check.argmax_agreement:.2f}% "
                          f"{'>=' if check.safe else '<'} {100 * floor:g}%")
            logging.info("export: %s on %s: max abs error %.3g, argmax agreement %.3f%%, "
                         "mIoU %+.2f pt: %s", artifact.path, check.device, check.max_abs_error,
                         100 * check.argmax_agreement, 100 * check.miou_delta,
                         "GPU-safe" if check.safe else "NOT GPU-safe")
        artifact.gpu = check


def _measure(report: ExportReport, references: dict[str, KerasSession], sessions: dict,
             options: ExportOptions, eval_source: Source) -> dict:
    """(artifact path, runtime) -> Verification; the models' fp32 mIoUs into the report."""
    everything = {("keras", name): ref for name, ref in references.items()} | sessions
    reference_of = {key: ("keras", report.artifact(key[0]).model) for key in sessions}
    report.parity_images = min(options.parity_images, len(eval_source))
    logging.info("export: verifying %d sessions and %d fp32 Keras models: parity on %d, mIoU on "
                 "%d %s/%s images", len(sessions), len(references), report.parity_images,
                 min(options.eval_images, len(eval_source)), eval_source.name, eval_source.split)
    measured = verify_sessions(everything, reference_of, eval_source, options.parity_images,
                               options.eval_images)
    for name in references:
        score = measured.pop(("keras", name))
        if score:
            report.models[name].reference = Accuracy(**score)
            report.eval_images = score["eval_images"]
    results = {}
    for key, values in measured.items():
        reference = report.models[report.artifact(key[0]).model].reference
        if reference is not None:
            values["miou_delta"] = values["miou"] - reference.miou
        results[key] = Verification(runtime=key[1], **values)
    return results


# The GPU check's argmax-agreement floor: float models (computed in fp16 by default), and
# integer ones.
GPU_MIN_AGREEMENT = {True: 0.995, False: 0.98}


def default_min_agreement(quantization: str, precision: str) -> float:
    """The agreement floor of an artifact under a runtime of that arithmetic precision: 99.9%
    where both keep float32 arithmetic (fp32, and fp16 weights computed in float32), 98% for
    integer or reduced-precision arithmetic (dynamic, int8, qat; bf16 or fp16 runtimes)."""
    exact = quantization in ("fp32", "fp16") and precision not in ("bf16", "fp16")
    return 0.999 if exact else 0.98


def _apply_floors(report: ExportReport, options: ExportOptions) -> list[tuple]:
    """Marks every verification below its floors; returns (artifact, runtime, what) rows."""
    failures = []
    for artifact in report.artifacts:
        for v in artifact.verifications:
            problems = []
            floor = options.min_agreement
            if floor is None:
                floor = default_min_agreement(artifact.quantization,
                                              runtimes.get(v.runtime).precision)
            if v.argmax_agreement is not None and v.argmax_agreement < floor:
                problems.append(f"argmax agreement {100 * v.argmax_agreement:.3f}% < "
                                f"{100 * floor:g}%")
            if v.miou_delta is not None and v.miou_delta < -options.max_miou_drop:
                problems.append(f"mIoU {100 * v.miou_delta:+.2f} pt < "
                                f"-{100 * options.max_miou_drop:g} pt")
            if problems:
                v.below_floor = "; ".join(problems)
                failures.append((artifact.path, v.runtime, v.below_floor))
    return failures


def floor_table(failures: list[tuple]) -> str:
    """The failures as a Markdown table (what FloorFailed says)."""
    rows = "\n".join(f"| `{path}` | {runtime} | {what} |" for path, runtime, what in failures)
    return (f"{len(failures)} artifact verification(s) below the accuracy floors (the export "
            f"is complete; its report marks them):\n| artifact | runtime | below the floor |\n"
            f"|---|---|---|\n{rows}")


def _source_path(model_path: str) -> str:
    """The real path of what `model_path` is read from: the .npy file or the model dir."""
    return os.path.realpath(model_path if model_path.endswith(".npy")
                            else model_dir_of(model_path))


def _export_problem(path: str) -> str | None:
    """Why --overwrite must not replace `path`, or None for an export."""
    if os.path.isfile(os.path.join(path, layout.REPORT_JSON)):
        return None
    return f"not an export (no {layout.REPORT_JSON}); --overwrite replaces only exports"


def _check_source_is_safe(model_path: str, export_dir: str) -> None:
    """Refuses an export that would replace the model it exports or write into its model
    directory."""
    source, target = _source_path(model_path), os.path.realpath(export_dir)
    if holds(target, source) or holds(source, target):
        raise OptionError("export_dir", f"{export_dir}: the export would replace the source "
                          f"model {model_path} or write into its directory; choose another "
                          f"export directory")


def export(model_path: str, options: ExportOptions, train_source: Source | None = None,
           eval_source: Source | None = None, prune: PruneOptions | None = None
           ) -> ExportReport:
    """Exports (and optionally first prunes) a model; returns the report.

    With `prune`, the pruned model is exported as `options.model_name` in every format and
    quantization, and (unless `options.export_unpruned` is False) the source model as
    `<model_name>_unpruned` in every format at fp32, both verified, side by side in the report.
    An interrupted pruning fine-tune resumes when the same export is run again.

    Args:
      model_path: a model dir (checkpoint + plan.json), checkpoint prefix or reference `.npy`.
      options: what to export and how to verify it.
      train_source: training data for int8 calibration, QAT and pruning fine-tuning.
      eval_source: validation data for parity and mIoU.
      prune: prune with `deploy.prune_lib` first (the pruned model dir is exported too).

    Returns:
      The report also written to `export_report.json`.

    Raises:
      FileExistsError: the export directory is not empty and not `options.overwrite`.
      ValueError, FileNotFoundError: bad options, model or data.
      icnet.exits.FloorFailed: with `options.floors`, artifacts below their accuracy floors
        (the export is published, its report marking them).
      icnet.interrupts.Interrupted: a signal (a pruning fine-tune's work is kept).
    """
    begin = time.time()
    config, weights = load_weights(model_path)
    _check_data(options, config, train_source, eval_source, prune)
    _check_source_is_safe(model_path, options.export_dir)
    staging = Staging(options.export_dir, options.overwrite, replaceable=_export_problem)
    work = work_dir_for(staging.target)
    with staging, tempfile.TemporaryDirectory(prefix="icnet_export_") as scratch:
        logging.info("export: staging in %s", staging.root)
        unpruned = options.unpruned() if prune is not None and options.export_unpruned else None
        for model in (m for m in (unpruned, options) if m and "saved_model" in m.formats):
            base = os.path.join("saved_model", model.model_name)
            for version in layout.saved_model_versions(os.path.join(staging.target, base)):
                if version != options.version:
                    staging.carry(os.path.join(base, str(version)))
        report = ExportReport(model_name=options.model_name, version=options.version,
                              source=model_path, input_size=list(options.input_size),
                              models={}, artifacts=[],
                              data={"train": getattr(train_source, "name", None),
                                    "eval": getattr(eval_source, "name", None)})
        writer = _Writer(staging, options, train_source, scratch)
        references = {}
        source_config, source_weights = config, weights
        if prune is not None:
            pruned_dir = staging.path(layout.PRUNED_MODEL_DIR)
            logging.info("export: pruning %s (schedule %s) into %s", model_path,
                         list(prune.schedule), layout.PRUNED_MODEL_DIR)
            # Both models' mIoU is measured below when the unpruned one (the source, or the
            # equal-budget control) is exported too.
            report.prune = prune_into(
                model_path, pruned_dir,
                dataclasses.replace(prune, input_size=options.input_size,
                                    eval_images=0 if unpruned else options.eval_images),
                train_source, eval_source, os.path.join(work, "prune"))
            config, weights = load_weights(pruned_dir)
            if report.prune.control is not None:  # the unpruned model at equal training
                source_config, source_weights = load_weights(
                    os.path.join(pruned_dir, report.prune.control.directory))
        if unpruned is not None:
            source_config, source_weights = merged(source_config, source_weights)
            logging.info("export: building the unpruned fp32 model at %dx%d",
                         *options.input_size)
            source_model = build_inference_model(source_config, source_weights,
                                                 options.input_size)
            report.models[unpruned.model_name] = _model_report(
                source_model, source_config, options, pruned=False,
                note=(f"the source fine-tuned {report.prune.control.steps} more steps, as long "
                      f"as the pruned model: the equal-budget control"
                      if report.prune.control else "the source as trained"))
            report.artifacts += writer.write(unpruned, source_model, source_config,
                                             source_weights)
            references[unpruned.model_name] = KerasSession(source_model)
        config, weights = merged(config, weights)
        config.save(staging.path(layout.PLAN_FILENAME))
        logging.info("export: building the fp32 model at %dx%d", *options.input_size)
        model = build_inference_model(config, weights, options.input_size)
        pruned = prune is not None or _is_pruned(model_path)
        report.models[options.model_name] = _model_report(model, config, options, pruned)
        report.artifacts += writer.write(options, model, config, weights)
        report.qat = writer.qat
        references[options.model_name] = KerasSession(model)
        _verify(report, references, staging, options, eval_source)
        _time_budget_target(report, staging, options)
        if report.prune and unpruned is not None:  # the pruning's mIoUs are measured here
            _measured_here(report, unpruned.model_name)
        failures = _apply_floors(report, options)
        report.seconds = round(time.time() - begin, 1)
        report.write(staging.root)
        logging.info("export: publishing into %s", staging.target)
        staging.publish()
    shutil.rmtree(work, ignore_errors=True)
    for artifact in report.artifacts:
        for v in artifact.verifications:
            logging.info("export: %-40s %-16s %10d bytes  agreement %s  mIoU %s", artifact.path,
                         v.runtime, artifact.size_bytes, v.argmax_agreement, v.miou)
    logging.info("export: done in %.1f s; report %s", time.time() - begin,
                 os.path.join(options.export_dir, layout.REPORT_JSON))
    if failures and options.floors:
        raise FloorFailed(floor_table(failures))
    for path, runtime, what in failures:
        logging.warning("export: %s under %s is below the accuracy floors (%s); --nofloors "
                        "let it pass", path, runtime, what)
    return report


def _time_budget_target(report: ExportReport, staging: Staging, options: ExportOptions) -> None:
    """A latency budget's target timed on the exported artifact of its quantization (the
    prune report's `exported_ms`)."""
    budget = report.prune.budget if report.prune else None
    if budget is None or budget.latency_ms is None:
        return
    relative = options.path("tflite", budget.quantization)
    if not any(artifact.path == relative for artifact in report.artifacts):
        logging.warning("budget: %s is not exported (--formats, --quantize): the latency "
                        "budget is not measured on an artifact", relative)
        return
    target = Target(budget.runtime, budget.quantization, budget.threads,
                    tuple(options.input_size))
    logging.info("budget: timing %s on %s", relative, target.describe())
    budget.exported_ms = round(1e3 * time_tflite(staging.path(relative), target), 2)
    logging.info("budget: the exported %s runs in %.1f ms (target %g ms)", relative,
                 budget.exported_ms, budget.latency_ms)


def _is_pruned(model_path: str) -> bool:
    """Whether `model_path` is the output of deploy.prune (its directory has a prune report)."""
    if model_path.endswith(".npy"):
        return False
    return PruneReport.read(model_dir_of(model_path)) is not None
