"""`export_report.json` and its human-readable twin `export_report.md`."""

from __future__ import annotations

import json
import os

from absl import logging

JSON_NAME = "export_report.json"
MARKDOWN_NAME = "export_report.md"


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage ("n/a" for None)."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _num(value, fmt: str = ".3g") -> str:
    return "n/a" if value is None else format(value, fmt)


def size_text(size: int | None) -> str:
    """Bytes as MiB or KiB ("n/a" for None)."""
    if size is None:
        return "n/a"
    return f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"


_TABLE_HEADER = ("| artifact | model | format | quantization | size | max abs err | rel L2 err | "
                 "argmax agreement | mIoU | ΔmIoU vs its fp32 | s/image | GPU delegate |")


def _artifact_row(a: dict) -> str:
    gpu = a.get("gpu_compatible")
    gpu_text = "n/a" if gpu is None else ("compatible" if gpu else "NOT compatible")
    delta = a.get("miou_delta")
    delta_text = "n/a" if delta is None else f"{100 * delta:+.2f} pt"
    cells = [f"`{a['path']}`", a.get("model", ""), a["format"], a["quantization"],
             size_text(a["size_bytes"]), _num(a.get("max_abs_error")), _num(a.get("rel_l2_error")),
             percent(a.get("argmax_agreement"), 3), percent(a.get("miou")), delta_text,
             _num(a.get("seconds_per_image"), ".3f"), gpu_text]
    return "| " + " | ".join(cells) + " |"


def _models_table(models: dict) -> list[str]:
    lines = ["| model | pruned | params | GFLOPs | fp32 Keras mIoU |", "|---|---|---|---|---|"]
    for name, model in models.items():
        miou = (model.get("reference") or {}).get("miou")
        lines.append(f"| {name} | {'yes' if model.get('pruned') else 'no'} | "
                     f"{model['params']:,} | {model['gflops']:.2f} | {percent(miou)} |")
    return lines


def markdown(report: dict) -> str:
    """The report as Markdown: models, one table row per artifact, GPU notes, QAT, pruning."""
    height, width = report["input_size"]
    lines = [
        f"# Export report: {report['model_name']} version {report['version']}",
        "",
        f"- source: `{report['source']}`",
        f"- input size: {height}x{width} (uint8 RGB; logits at 1/4); GFLOPs of the BN-merged "
        f"model at this size",
        (f"- parity: logits against each model's own fp32 Keras model on "
         f"{report['parity_images']} {report['data']['eval']} images; mIoU on "
         f"{report['eval_images']} images"),
        "",
        *_models_table(report["models"]),
        "", _TABLE_HEADER, "|---" * 12 + "|",
    ]
    lines += [_artifact_row(a) for a in report["artifacts"]]
    problems = [(a["path"], a["gpu_problems"]) for a in report["artifacts"]
                if a.get("gpu_problems")]
    if problems:
        lines += ["", "## GPU-delegate incompatibilities (TFLite Analyzer)", ""]
        for path, items in problems:
            lines += [f"- `{path}`:"] + [f"  - {item}" for item in items]
    qat = report.get("qat")
    if qat:
        crop = "x".join(str(n) for n in qat["crop_size"])
        lines += ["", "## Quantization-aware training", "",
                  (f"- {qat['steps']} steps ({qat.get('objective')}) at {crop}, batch "
                   f"{qat['batch_size']}, learning rate {qat['learning_rate']}, last loss "
                   f"{_num(qat.get('loss'))}, {qat['seconds']} s")]
    prune = report.get("prune")
    if prune:
        before, after = prune["original"], prune["stages"][-1]
        lines += ["", "## Pruning", ""]
        if "miou" in before:  # measured by deploy.prune when the unpruned model is not exported
            lines += ["| | params | GFLOPs | mIoU |", "|---|---|---|---|"]
            for label, stage in (("before", before), ("after", after)):
                lines.append(f"| {label} | {stage['params']:,} | {stage['gflops']:.2f} | "
                             f"{percent(stage.get('miou'))} |")
            lines.append("")
        lines += [(f"FLOPs x{after['flops'] / before['flops']:.3f}; schedule "
                       f"{[s['keep'] for s in prune['stages']]}, "
                       f"{prune.get('finetune_steps', 0)} fine-tuning steps per stage. The "
                       f"pruned checkpoint is in `{report.get('pruned_model_dir')}`.")]
    lines += ["", f"Export took {report['seconds']} s.", ""]
    return "\n".join(lines)


def write(report: dict, directory: str) -> tuple[str, str]:
    """Writes both reports into `directory`; returns their paths."""
    json_path = os.path.join(directory, JSON_NAME)
    md_path = os.path.join(directory, MARKDOWN_NAME)
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    with open(md_path, "w") as f:
        f.write(markdown(report))
    return json_path, md_path


def read(directory: str) -> dict:
    """The export report of an export directory; {} (with a warning) when it is missing or
    unreadable, so that callers can still describe the artifacts on disk."""
    path = os.path.join(directory, JSON_NAME)
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        logging.warning("%s: not readable (%s); artifacts are described from their file names "
                        "and the report's details are n/a", path, e)
        return {}
    return report if isinstance(report, dict) else {}
