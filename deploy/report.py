"""The typed export report (`export_report.json` and its Markdown twin) and prune report.

Small dataclass trees with a JSON round trip (`to_json` / `from_json`, with a schema version):
deploy.export and deploy.prune write them; benchmarks.latency, benchmarks.report and readers
of an export read them. TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any

from deploy import layout
from icnet.fileio import atomic_write_bytes

SCHEMA_VERSION = 2
PRUNE_REPORT_FILENAME = "prune_report.json"


# --------------------------------------------------------------------------------------------
# JSON <-> dataclasses.


def _convert(hint, value, where: str):
    """`value` (parsed JSON) as the type `hint` describes."""
    if value is None or hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value, where) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        return [_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        return {key: _convert(args[1], item, f"{where}.{key}") for key, item in value.items()}
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls, data, where: str = "report"):
    """A dataclass from parsed JSON; unknown keys are ignored, missing ones get defaults.

    Raises:
      ValueError: not an object, or a required field missing (naming `where`).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            values[field.name] = _convert(hints[field.name], data[field.name],
                                          f"{where}.{field.name}")
        elif (field.default is dataclasses.MISSING
              and field.default_factory is dataclasses.MISSING):
            raise ValueError(f"{where}: missing {field.name!r}")
    return cls(**values)


def to_dict(record) -> dict:
    return dataclasses.asdict(record)


# --------------------------------------------------------------------------------------------
# The report types.


@dataclasses.dataclass
class Verification:
    """One artifact under one runtime, against its model's fp32 Keras model.

    Parity: max abs and relative L2 error of the logits, argmax agreement (a fraction), on
    `parity_images`. Accuracy: mIoU and pixel accuracy on `eval_images`, and `miou_delta`
    (this mIoU minus the fp32 Keras model's, a fraction).
    """

    runtime: str
    max_abs_error: float | None = None
    rel_l2_error: float | None = None
    argmax_agreement: float | None = None
    parity_images: int = 0
    miou: float | None = None
    pixel_accuracy: float | None = None
    eval_images: int = 0
    seconds_per_image: float | None = None
    miou_delta: float | None = None
    below_floor: str | None = None  # what fell below deploy.export's accuracy floors

    @property
    def passed(self) -> bool:
        """Measured, and not below a floor."""
        return self.argmax_agreement is not None and self.below_floor is None


@dataclasses.dataclass
class GpuCheck:
    """The TFLite GPU-delegate verdict: the Analyzer's op check (`compatible`, `problems`)
    and, when run ("run"), the GPU accelerator's output against the fp32 Keras model on
    `images` val images, on `device` (`software_device`: a CPU-type Vulkan device, whose
    numerics are a GPU's but not its speed), with the verdict `safe`."""

    method: str
    compatible: bool | None
    problems: list[str] = dataclasses.field(default_factory=list)
    device: str = ""
    software_device: bool = False
    images: int = 0
    max_abs_error: float | None = None
    argmax_agreement: float | None = None
    miou: float | None = None
    miou_delta: float | None = None
    safe: bool | None = None
    note: str = ""


@dataclasses.dataclass
class MediaPipeCheck:
    """MediaPipe's ImageSegmenter on a .tflite: its category masks against the kit's class
    ids on the parity images (or why it was not run)."""

    agreement: float | None
    images: int = 0
    note: str = ""


@dataclasses.dataclass
class ArtifactReport:
    """One exported file or SavedModel version."""

    path: str
    model: str
    format: str
    quantization: str
    size_bytes: int
    input_dtype: str = "uint8"
    calibration_images: int = 0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    gpu: GpuCheck | None = None
    mediapipe: MediaPipeCheck | None = None
    verifications: list[Verification] = dataclasses.field(default_factory=list)

    def verification(self, runtime: str) -> Verification | None:
        return next((v for v in self.verifications if v.runtime == runtime), None)

    @property
    def primary(self) -> Verification | None:
        """The verification under the artifact's first (default) runtime."""
        return self.verifications[0] if self.verifications else None


@dataclasses.dataclass
class Accuracy:
    miou: float
    pixel_accuracy: float
    eval_images: int
    seconds_per_image: float | None = None


@dataclasses.dataclass
class ModelReport:
    """One exported model (the pruned one, or the unpruned source beside it)."""

    num_classes: int
    params: int
    flops: int
    gflops: float
    pruned: bool
    plan: dict[str, int]
    reference: Accuracy | None = None
    note: str = ""


@dataclasses.dataclass
class QatReport:
    steps: int
    crop_size: list[int]
    batch_size: int
    objective: str
    learning_rate: float
    loss: float | None = None
    seconds: float = 0.0


@dataclasses.dataclass
class Measure:
    """Params and FLOPs of the BN-merged model at the report's input size, and its mIoU."""

    params: int
    flops: int
    gflops: float
    miou: float | None = None


@dataclasses.dataclass
class FinetuneReport:
    steps: int
    losses: dict[str, float]
    seconds: float


@dataclasses.dataclass
class PruneStage:
    stage: int
    keep: float | None
    measure: Measure
    plan: dict[str, int]
    overrides: dict[str, float] | None = None
    miou_before_finetune: float | None = None
    finetune: FinetuneReport | None = None
    seconds: float = 0.0


@dataclasses.dataclass
class ControlReport:
    """The equal-budget control: the unpruned source fine-tuned for as many steps as the
    pruned model got, with the same settings (a model dir under the output, `control/`)."""

    steps: int
    miou: float | None
    seconds: float
    directory: str = "control"


@dataclasses.dataclass
class BudgetReport:
    """What a budget search chose (deploy.budget) and what was measured on the target.

    Costs are milliseconds on the target (`runtime`, `quantization`, `threads`, the report's
    input size) for a latency budget, GFLOPs for a FLOP budget. `rounds` holds, per search
    round, its kind ("cut" or "grow"), steps, the plan's estimate and its measured latency (a
    round off the budget re-anchors the estimate to that measurement and cuts further or
    widens back: deploy.budget.fit); `steps` every cut and widening of the chosen plan, and
    `measured_ms` its measurement. `final_ms`
    is measured after the fine-tune, `exported_ms` on deploy.export's artifact of the target
    quantization.
    """

    latency_ms: float | None
    gflops: float | None
    min_keep: float
    search_images: int
    estimate: float
    runtime: str | None = None
    quantization: str | None = None
    threads: int | None = None
    table: str | None = None
    source_ms: float | None = None
    measured_ms: float | None = None
    final_ms: float | None = None
    exported_ms: float | None = None
    rounds: list[dict] = dataclasses.field(default_factory=list)
    steps: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PruneReport:
    """What deploy.prune did: the source, every stage's widths, cost and accuracy."""

    source: str
    input_size: list[int]
    num_classes: int
    eval_images: int
    finetune_steps: int
    round_to: int
    original: Measure
    stages: list[PruneStage]
    checkpoint: str = ""
    criterion: str = "l1"
    control: ControlReport | None = None
    budget: BudgetReport | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def final(self) -> PruneStage:
        return self.stages[-1]

    @property
    def drop_against_control(self) -> float | None:
        """The pruned model's mIoU minus the equal-budget control's (a fraction)."""
        if self.control is None or self.control.miou is None or self.final.measure.miou is None:
            return None
        return self.final.measure.miou - self.control.miou

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=1)

    @classmethod
    def read(cls, model_dir: str) -> "PruneReport | None":
        """The prune report of a model dir; None when it has none."""
        path = os.path.join(model_dir, PRUNE_REPORT_FILENAME)
        if not os.path.isfile(path):
            return None
        return _read_json(cls, path)


@dataclasses.dataclass
class ExportReport:
    """What deploy.export wrote and measured."""

    model_name: str
    version: int
    source: str
    input_size: list[int]
    models: dict[str, ModelReport]
    artifacts: list[ArtifactReport]
    data: dict[str, str | None] = dataclasses.field(default_factory=dict)
    parity_images: int = 0
    eval_images: int = 0
    prune: PruneReport | None = None
    qat: QatReport | None = None
    seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def full_width_model(self) -> str | None:
        """The unpruned model the export compares against (the only model of an unpruned
        export, the source beside the pruned one of a pruned export)."""
        names = [name for name, model in self.models.items() if not model.pruned]
        return names[0] if len(names) == 1 else None

    def pruned_model(self) -> str | None:
        names = [name for name, model in self.models.items() if model.pruned]
        return names[0] if names else None

    def artifact(self, path: str) -> ArtifactReport | None:
        path = os.path.normpath(path)
        return next((a for a in self.artifacts if os.path.normpath(a.path) == path), None)

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=1)

    def write(self, directory: str) -> None:
        """Writes export_report.json and export_report.md into `directory` (atomically)."""
        atomic_write_bytes(os.path.join(directory, layout.REPORT_JSON), self.to_json().encode())
        atomic_write_bytes(os.path.join(directory, layout.REPORT_MARKDOWN),
                           markdown(self).encode())

    @classmethod
    def read(cls, directory: str) -> "ExportReport":
        """The report of an export directory.

        Raises:
          FileNotFoundError: the directory has no export_report.json.
          ValueError: unreadable, or written by another schema version.
        """
        path = os.path.join(directory, layout.REPORT_JSON)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory}: not an export (no {layout.REPORT_JSON})")
        return _read_json(cls, path)


def _read_json(cls, path: str):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: report schema version {version}, this kit reads "
                         f"{SCHEMA_VERSION}; rerun the command that wrote it")
    return from_dict(cls, data, os.path.basename(path))


# --------------------------------------------------------------------------------------------
# Markdown.


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage ("n/a" for None)."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def number(value, fmt: str = ".3g") -> str:
    return "n/a" if value is None else format(value, fmt)


def size_text(size: int | None) -> str:
    """Bytes as MiB or KiB ("n/a" for None)."""
    if size is None:
        return "n/a"
    return f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"


def points(delta: float | None) -> str:
    """A difference of fractions in percentage points ("n/a" for None)."""
    return "n/a" if delta is None else f"{100 * delta:+.2f} pt"


def gpu_text(check: GpuCheck | None) -> str:
    if check is not None and check.method == "run":
        if check.argmax_agreement is None:
            return f"NOT GPU-safe: did not run ({check.note})"
        return (f"{'GPU-safe' if check.safe else '**NOT GPU-safe**'}: "
                f"{100 * check.argmax_agreement:.2f}% argmax, max err "
                f"{check.max_abs_error:.2g}, {points(check.miou_delta)} mIoU on "
                f"{check.images} images ({check.device})")
    if check is None or check.compatible is None:
        return "n/a"
    return "Analyzer: compatible" if check.compatible else "Analyzer: NOT compatible"


def mediapipe_text(check: MediaPipeCheck | None) -> str:
    if check is None:
        return "n/a"
    if check.agreement is None:
        return f"not run ({check.note})" if check.note else "not run"
    return f"{100 * check.agreement:.3f}% of {check.images} masks"


_TABLE_HEADER = ("| artifact | model | quantization | runtime | size | max abs err | rel L2 err | "
                 "argmax agreement | mIoU | ΔmIoU vs its fp32 | s/image | GPU delegate | "
                 "MediaPipe | floors |")


def _artifact_rows(artifact: ArtifactReport) -> list[str]:
    rows = []
    for v in artifact.verifications or [Verification(runtime="n/a")]:
        cells = [f"`{artifact.path}`", artifact.model, artifact.quantization, v.runtime,
                 size_text(artifact.size_bytes), number(v.max_abs_error),
                 number(v.rel_l2_error), percent(v.argmax_agreement, 3), percent(v.miou),
                 points(v.miou_delta), number(v.seconds_per_image, ".3f"),
                 gpu_text(artifact.gpu), mediapipe_text(artifact.mediapipe),
                 f"**FAILED**: {v.below_floor}" if v.below_floor
                 else ("ok" if v.argmax_agreement is not None else "n/a")]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _models_table(models: dict[str, ModelReport]) -> list[str]:
    lines = ["| model | pruned | params | GFLOPs | fp32 Keras mIoU | note |",
             "|---|---|---|---|---|---|"]
    for name, model in models.items():
        miou = model.reference.miou if model.reference else None
        lines.append(f"| {name} | {'yes' if model.pruned else 'no'} | {model.params:,} | "
                     f"{model.gflops:.2f} | {percent(miou)} | {model.note} |")
    return lines


def markdown(report: ExportReport) -> str:
    """The report as Markdown: models, one row per (artifact, runtime), GPU notes, QAT,
    pruning."""
    height, width = report.input_size
    lines = [
        f"# Export report: {report.model_name} version {report.version}", "",
        f"- source: `{report.source}`",
        f"- input size: {height}x{width} (uint8 RGB; logits at 1/4); GFLOPs of the BN-merged "
        f"model at this size",
        (f"- parity: logits against each model's own fp32 Keras model on "
         f"{report.parity_images} {report.data.get('eval')} images; mIoU on "
         f"{report.eval_images} images"), "",
        *_models_table(report.models), "", _TABLE_HEADER, "|---" * 14 + "|",
    ]
    for artifact in report.artifacts:
        lines += _artifact_rows(artifact)
    problems = [(a.path, a.gpu.problems) for a in report.artifacts if a.gpu and a.gpu.problems]
    if problems:
        lines += ["", "## GPU-delegate incompatibilities (TFLite Analyzer)", ""]
        for path, items in problems:
            lines += [f"- `{path}`:"] + [f"  - {item}" for item in items]
    if report.qat:
        qat = report.qat
        crop = "x".join(str(n) for n in qat.crop_size)
        lines += ["", "## Quantization-aware training", "",
                  (f"- {qat.steps} steps ({qat.objective}) at {crop}, batch {qat.batch_size}, "
                   f"learning rate {qat.learning_rate}, last loss {number(qat.loss)}, "
                   f"{qat.seconds} s")]
    if report.prune:
        lines += ["", "## Pruning", ""] + prune_lines(report.prune)
        lines += ["", f"The pruned checkpoint is in `{layout.PRUNED_MODEL_DIR}`."]
    lines += ["", f"Export took {report.seconds} s.", ""]
    return "\n".join(lines)


def budget_line(budget: BudgetReport) -> str:
    """The budget, its estimate and what was measured, in one sentence."""
    if budget.latency_ms is None:
        return (f"Budget: {budget.gflops:g} GFLOPs; the chosen plan has "
                f"{budget.estimate:.2f}.")
    measured = [f"{what} {ms:.1f} ms" for what, ms in (
        ("after the fine-tune", budget.final_ms), ("on the exported artifact",
                                                   budget.exported_ms)) if ms is not None]
    return (f"Budget: {budget.latency_ms:g} ms on {budget.runtime} {budget.quantization} at "
            f"{budget.threads} threads; the chosen plan was estimated at {budget.estimate:.1f} "
            f"ms and measured {', '.join(measured) or 'nowhere'} (the source: "
            f"{budget.source_ms:.1f} ms).")


def prune_lines(prune: PruneReport) -> list[str]:
    """The pruning summary: before/after (with mIoU when measured), the equal-budget control
    beside them, schedule, FLOPs ratio."""
    before, after = prune.original, prune.final.measure
    steps = prune.finetune_steps * len(prune.stages)
    lines = []
    if before.miou is not None or after.miou is not None:
        lines += ["| | params | GFLOPs | training | mIoU |", "|---|---|---|---|---|",
                  f"| before (the source) | {before.params:,} | {before.gflops:.2f} | as "
                  f"trained | {percent(before.miou)} |"]
        if prune.control is not None:
            lines.append(f"| equal-budget control (the source + {prune.control.steps} steps) | "
                         f"{before.params:,} | {before.gflops:.2f} | + {prune.control.steps} "
                         f"steps | {percent(prune.control.miou)} |")
        lines += [f"| after (pruned, {prune.criterion}) | {after.params:,} | "
                  f"{after.gflops:.2f} | + {steps} steps | {percent(after.miou)} |", ""]
    if prune.drop_against_control is not None:
        lines += [f"Pruning changed the mIoU by {points(prune.drop_against_control)} against "
                  f"the equal-budget control (the same {steps} steps of training).", ""]
    elif steps and prune.control is None:
        lines += [f"No equal-budget control (--control): the pruned model had {steps} more "
                  f"steps of training than the source, so before/after is not a like-for-like "
                  f"comparison.", ""]
    if prune.budget is not None:
        lines += [budget_line(prune.budget), ""]
    keeps = [stage.keep if stage.keep is not None else "plan" for stage in prune.stages]
    lines.append(f"FLOPs x{after.flops / before.flops:.3f}; schedule {keeps}, "
                 f"{prune.finetune_steps} fine-tuning steps per stage, criterion "
                 f"{prune.criterion}.")
    return lines
