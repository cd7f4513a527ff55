"""benchmarks.report's work: REPORT.md from a latency run and its export's typed report.

REPORT.md holds the machine, one table row per latency result, the acceptance ratios and the
published reference numbers beside ours, and links two plots: mIoU against latency and size
against latency. Every result appears, including the unavailable and failed ones with their
reason. Speedups are against the full-width fp32 model: the fp32 SavedModel under tf_cpu, at
the same thread count, of the model the export report marks unpruned. mIoU is the export
report's verification of that artifact under that runtime.
"""

from __future__ import annotations

import io
import json
import os

from deploy.report import (ExportReport, ModelReport, Verification, percent, points,
                           prune_lines, size_text)
from icnet.exits import OptionError
from icnet.fileio import atomic_write_bytes

REPORT_NAME = "REPORT.md"
MIOU_PLOT = "miou_vs_latency.png"
SIZE_PLOT = "size_vs_latency.png"

# Published numbers (the seed README, the ICNet paper, and the reference graph's timings the
# project's developers recorded, which we could not reproduce), kept here as data: a user's
# clone has no copy of the sources.
PUBLISHED = (
    ("Cityscapes val mIoU, train_30k (fs=1)", "67.26% (TF port) / 67.7% (Caffe)",
     "seed README"),
    ("Cityscapes val mIoU, trainval_90k", "80.90%", "seed README"),
    ("ADE20K val mIoU, fs=2", "32.25%", "seed README"),
    ("speed at 1024x2048, Titan Xp", "0.037 s (about 27 fps)", "seed README"),
    ("speed at 1024x2048, Titan X (Maxwell)", "about 30 fps", "ICNet paper"),
    ("reference graph fs=1, 1024x2048, 2-core AVX-512 CPU, TF 2.21 fp32", "0.156 s",
     "recorded by the project's developers (median of 5); not reproduced, see the README"),
    ("reference graph fs=2, same", "0.518 s",
     "recorded, not reproduced (442 GFLOP/s, above the fp32 matrix-product rate recorded "
     "for that CPU)"),
)
REFERENCE_CPU_S = {"fs1": 0.156, "fs2": 0.518}
CITYSCAPES_MIOU_FS1 = 0.6726


# --------------------------------------------------------------------------------------------
# Finding results.


def _model_names(results: list[dict], report: ExportReport) -> list[str]:
    return sorted({r.get("model") for r in results if r.get("model")} | set(report.models))


def find(results: list[dict], model: str | None, fmt: str, quantization: str, runtime: str,
         threads: int | None) -> dict | None:
    """The first result of that model, format, quantization, runtime and thread count (an ok
    one when there are several)."""
    if model is None:
        return None
    matches = [r for r in results if r.get("model") == model and r.get("format") == fmt
               and r.get("quantization") == quantization and r.get("runtime") == runtime
               and r.get("threads") == threads]
    ok = [r for r in matches if r.get("status") == "ok"]
    return (ok or matches or [None])[0]


def _ok(result: dict | None) -> bool:
    return bool(result) and result.get("status") == "ok" and bool(result.get("median_s"))


def software_device(result: dict | None) -> bool:
    """A GPU result measured on a software (CPU-type) Vulkan device: its numerics are the GPU
    path's, its times are not GPU times."""
    return bool(result) and bool(result.get("software_device"))


def baseline(results: list[dict], full: str | None, threads: int | None) -> dict | None:
    """The full-width fp32 SavedModel tf_cpu result at `threads` (ok or not; None if absent)."""
    return find(results, full, "saved_model", "fp32", "tf_cpu", threads)


def _baseline_threads(results: list[dict], full: str | None) -> int | None:
    """The largest thread count with an ok baseline (what GPU rows are compared with)."""
    counts = sorted({r["threads"] for r in results if r.get("threads")}, reverse=True)
    return next((count for count in counts if _ok(baseline(results, full, count))), None)


def speedup(result: dict, results: list[dict], full: str | None
            ) -> tuple[float | None, int | None]:
    """(baseline median / this median, the baseline's thread count) or (None, None)."""
    if not _ok(result):
        return None, None
    threads = result.get("threads")
    if threads is None:
        threads = _baseline_threads(results, full)
    base = baseline(results, full, threads)
    if not _ok(base):
        return None, None
    return base["median_s"] / result["median_s"], threads


def verification(report: ExportReport, result: dict) -> Verification | None:
    """The export's verification of a result's artifact under the result's runtime."""
    artifact = report.artifact(result.get("artifact", ""))
    return artifact.verification(result.get("runtime")) if artifact else None


# --------------------------------------------------------------------------------------------
# Acceptance ratios.


def _label(model: str | None, fmt: str, quantization: str, runtime: str,
           threads: int | None) -> str:
    kind = {"saved_model": "SavedModel", "tflite": "TFLite", "onnx": "ONNX",
            "openvino": "OpenVINO IR"}.get(fmt, fmt)
    where = "" if threads is None else f", {threads} threads"
    return f"{model or '(none)'} {quantization} {kind} under {runtime}{where}"


def _ratio(check: str, numerator: tuple, denominator: tuple, target: float,
           results: list[dict], missing_model: str | None = None) -> dict:
    """One ratio of medians, numerator / denominator, against `target` (met when <=)."""
    row = {"check": check, "numerator": _label(*numerator), "denominator": _label(*denominator),
           "target": target, "value": None, "met": None, "why": None}
    if missing_model:
        row["why"] = missing_model
        return row
    for part in (numerator, denominator):
        result = find(results, *part)
        if not _ok(result):
            state = "not measured" if result is None else (
                f"{result.get('status')}: {result.get('reason') or result.get('error')}")
            row["why"] = f"no ok result for {_label(*part)} ({state})"
            return row
    value = find(results, *numerator)["median_s"] / find(results, *denominator)["median_s"]
    row.update(value=value, met=value <= target)
    return row


def acceptance_ratios(results: list[dict], report: ExportReport, threads: int = 2) -> list[dict]:
    """The acceptance checks at `threads` threads.

    Returns:
      Rows {"check", "numerator", "denominator", "value", "target", "met", "why"}: `met` is
      True/False, or None with `why` when a needed result is missing or not ok.
    """
    full, pruned = report.full_width_model(), report.pruned_model()
    no_pruned = None if pruned else "the export has no pruned model"
    no_full = None if full else "no full-width (unpruned) model in the export"
    rows = [
        _ratio("pruned / full-width fp32 TFLite XNNPACK",
               (pruned, "tflite", "fp32", "tflite_xnnpack", threads),
               (full, "tflite", "fp32", "tflite_xnnpack", threads), 0.35, results,
               no_pruned or no_full),
        _ratio("int8 / fp32 TFLite XNNPACK of the pruned model",
               (pruned, "tflite", "int8", "tflite_xnnpack", threads),
               (pruned, "tflite", "fp32", "tflite_xnnpack", threads), 0.5, results, no_pruned),
        _ratio("pruned int8 TFLite XNNPACK / pruned fp32 SavedModel tf_cpu",
               (pruned, "tflite", "int8", "tflite_xnnpack", threads),
               (pruned, "saved_model", "fp32", "tf_cpu", threads), 0.45, results, no_pruned),
        _fastest_verified(results, report, pruned, threads, no_pruned),
        _verified_ratio(_ratio("full-width fp32 SavedModel tf_cpu_bf16 / tf_cpu",
                               (full, "saved_model", "fp32", "tf_cpu_bf16", threads),
                               (full, "saved_model", "fp32", "tf_cpu", threads), 0.5, results,
                               no_full),
                        report, find(results, full, "saved_model", "fp32", "tf_cpu_bf16",
                                     threads), min_agreement=0.99),
    ]
    for model in _model_names(results, report):
        rows.append(_ratio(f"TFLite fp32 XNNPACK / SavedModel tf_cpu ({model})",
                           (model, "tflite", "fp32", "tflite_xnnpack", threads),
                           (model, "saved_model", "fp32", "tf_cpu", threads), 1.15, results))
        rows.append(_ratio(f"onnxruntime_cpu / SavedModel tf_cpu ({model})",
                           (model, "onnx", "fp32", "onnxruntime_cpu", threads),
                           (model, "saved_model", "fp32", "tf_cpu", threads), 1.3, results))
    return rows


def _verified_ratio(row: dict, report: ExportReport, result: dict | None,
                    min_agreement: float, max_miou_drop: float | None = None) -> dict:
    """A ratio row that is met only if its numerator's verification holds too."""
    checked = verification(report, result) if result else None
    if row["met"] is None:
        return row
    if checked is None or checked.argmax_agreement is None:
        return {**row, "met": None, "why": "the numerator has no verification in the export"}
    notes = [f"agreement {percent(checked.argmax_agreement, 2)} (>= {percent(min_agreement, 0)})"]
    met = row["met"] and checked.argmax_agreement >= min_agreement
    if max_miou_drop is not None:
        notes.append(f"mIoU {points(checked.miou_delta)} against its fp32 model (>= "
                     f"-{100 * max_miou_drop:g} pt)")
        met = met and checked.miou_delta is not None and checked.miou_delta >= -max_miou_drop
    return {**row, "met": met, "value": row["value"], "note": ", ".join(notes)}


# What "verified" means for the fastest-artifact check and "what to deploy": the export
# verified the artifact under that runtime and it kept its fp32 model's accuracy.
MIN_AGREEMENT, MAX_MIOU_DROP = 0.98, 0.01


def passes(checked: Verification | None) -> bool:
    """Verified, above the export's floors, and within MIN_AGREEMENT and MAX_MIOU_DROP."""
    return (checked is not None and checked.passed
            and checked.argmax_agreement >= MIN_AGREEMENT
            and (checked.miou_delta is None or checked.miou_delta >= -MAX_MIOU_DROP))


def fastest_verified(results: list[dict], report: ExportReport, model: str | None,
                     threads: int) -> dict | None:
    """The fastest ok CPU result of `model` at `threads` whose artifact the export verified
    under that runtime with at least MIN_AGREEMENT argmax agreement and at most MAX_MIOU_DROP
    of mIoU lost against its fp32 model."""
    cpu = [r for r in results if _ok(r) and r.get("model") == model
           and r.get("threads") == threads and passes(verification(report, r))]
    return min(cpu, key=lambda r: r["median_s"]) if cpu else None


def _fastest_verified(results: list[dict], report: ExportReport, pruned: str | None,
                      threads: int, missing_model: str | None) -> dict:
    """The kit's fastest verified CPU artifact of the pruned model against its int8 TFLite
    under XNNPACK: at most 0.7x, with MIN_AGREEMENT agreement and at most MAX_MIOU_DROP of
    mIoU lost."""
    fastest = fastest_verified(results, report, pruned, threads)
    numerator = ((pruned, fastest["format"], fastest["quantization"], fastest["runtime"],
                  threads) if fastest else (pruned, "any", "any", "the fastest runtime", threads))
    row = _ratio("fastest verified CPU artifact of the pruned model / pruned int8 TFLite "
                 "XNNPACK", numerator, (pruned, "tflite", "int8", "tflite_xnnpack", threads),
                 0.7, results, missing_model or (
                     None if fastest else "no ok CPU result of the pruned model passes its "
                                          "verification"))
    return _verified_ratio(row, report, fastest, MIN_AGREEMENT, MAX_MIOU_DROP)


# --------------------------------------------------------------------------------------------
# Markdown.


def _ms(result: dict, key: str = "median_s") -> str:
    value = result.get(key)
    return "n/a" if value is None else f"{value * 1e3:.2f} ms"


def _cell(text, limit: int = 400) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _params(model: ModelReport | None) -> str:
    return "n/a" if model is None else f"{model.params:,}"


def _gflops(model: ModelReport | None) -> str:
    return "n/a" if model is None else f"{model.gflops:.3g}"


def _threads(result: dict) -> str:
    return "gpu" if result.get("threads") is None else str(result["threads"])


_TABLE_HEADER = ("| artifact | model | format | quant | runtime | threads | status | size | "
                 "params | GFLOPs | agreement | mIoU | median | p90 | fps | peak RSS | speedup | "
                 "note |")


def result_rows(latency: dict, report: ExportReport) -> list[str]:
    """One Markdown table row per latency result, in the latency file's order."""
    results = latency.get("results") or []
    full = report.full_width_model()
    base_rows = {id(baseline(results, full, t)) for t in {r.get("threads") for r in results}}
    rows = []
    for r in results:
        model = report.models.get(r.get("model"))
        checked = verification(report, r)
        ratio, against = speedup(r, results, full)
        if ratio is None:
            speed = "n/a"
        elif id(r) in base_rows:
            speed = f"{ratio:.2f}x (baseline)"
        else:
            speed = f"{ratio:.2f}x" + (f" (vs {against} thr)" if r.get("threads") is None
                                       else "")
        ok = r.get("status") == "ok"
        note = "" if ok else (r.get("reason") or r.get("error") or "")
        if ok and software_device(r):
            speed = "n/a"
            note = (f"software Vulkan device ({r.get('vulkan_device')}): the GPU path's "
                    f"numerics, not GPU times")
        peak = r.get("peak_rss_bytes")
        cells = [f"`{r.get('artifact')}`", r.get("model") or "n/a", r.get("format") or "n/a",
                 r.get("quantization") or "n/a", r.get("runtime"), _threads(r),
                 r.get("status", "n/a"), size_text(r.get("size_bytes")), _params(model),
                 _gflops(model), percent(checked.argmax_agreement if checked else None, 2),
                 percent(checked.miou if checked else None),
                 _ms(r) if ok else "n/a", _ms(r, "p90_s") if ok else "n/a",
                 f"{r['fps']:.1f}" if ok and r.get("fps") else "n/a",
                 f"{peak / 2**20:.0f} MiB" if ok and peak else "n/a", speed, _cell(note)]
        rows.append("| " + " | ".join(_cell(c) if i < len(cells) - 1 else c
                                      for i, c in enumerate(cells)) + " |")
    return rows


def _machine_lines(machine: dict) -> list[str]:
    memory = machine.get("memory_total_bytes")
    versions = machine.get("versions") or {}
    cores = machine.get("logical_cores")
    usable = machine.get("usable_cores")
    cores_text = "n/a" if cores is None else str(cores)
    if usable is not None and usable != cores:
        cores_text += f" ({usable} usable by this process)"
    return [
        f"- CPU: {machine.get('cpu_model') or 'n/a'}",
        f"- logical cores: {cores_text}",
        f"- ISA flags: {', '.join(machine.get('isa_flags') or []) or 'none detected'}",
        f"- memory: {'n/a' if memory is None else f'{memory / 2**30:.1f} GiB'}",
        f"- GPU: {', '.join(machine.get('gpus') or []) or 'none'}",
        f"- platform: {machine.get('platform', 'n/a')}, Python {machine.get('python', 'n/a')}",
        "- versions: " + (", ".join(f"{k} {v or 'not installed'}"
                                    for k, v in versions.items()) or "n/a"),
    ]


def _model_miou(report: ExportReport, model: str | None) -> float | None:
    info = report.models.get(model)
    return info.reference.miou if info and info.reference else None


def _reference_lines(latency: dict, report: ExportReport, threads: int) -> list[str]:
    results = latency.get("results") or []
    full, pruned = report.full_width_model(), report.pruned_model()
    size = "x".join(str(n) for n in report.input_size)
    lines = ["## Reference numbers", "", "Published:", "", "| what | value | source |",
             "|---|---|---|"]
    lines += [f"| {what} | {value} | {where} |" for what, value, where in PUBLISHED]
    lines += ["", f"Ours ({threads} threads where a thread count applies):", "",
              "| ours | value | published | ours / published |", "|---|---|---|---|"]

    def latency_row(label: str, result: dict | None, key: str) -> str:
        published = REFERENCE_CPU_S[key]
        if not _ok(result):
            return f"| {label} | n/a (not measured ok) | {published} s | n/a |"
        return (f"| {label} | {result['median_s']:.4g} s | {published} s | "
                f"{result['median_s'] / published:.2f} |")

    lines.append(latency_row(f"full-width fp32 SavedModel tf_cpu ({full or 'n/a'}) vs "
                             "reference fs=2", find(results, full, "saved_model", "fp32",
                                                    "tf_cpu", threads), "fs2"))
    lines.append(latency_row(f"pruned fp32 SavedModel tf_cpu ({pruned or 'no pruned model'}) "
                             "vs reference fs=1", find(results, pruned, "saved_model", "fp32",
                                                       "tf_cpu", threads), "fs1"))
    lines.append(latency_row(f"pruned int8 TFLite XNNPACK ({pruned or 'no pruned model'}) vs "
                             "reference fs=1", find(results, pruned, "tflite", "int8",
                                                    "tflite_xnnpack", threads), "fs1"))
    for label, model in (("full-width", full), ("pruned", pruned)):
        if model is not None:
            lines.append(f"| {label} fp32 mIoU ({model}) | {percent(_model_miou(report, model))}"
                         f" | {100 * CITYSCAPES_MIOU_FS1:.2f}% (Cityscapes, fs=1) | not "
                         f"comparable |")
    machine = latency.get("machine") or {}
    lines += ["", (f"Our input is {size} (the published timings are at 1024x2048), our mIoU "
                   "is measured on the export's evaluation data (synthetic street scenes "
                   "unless the export used Cityscapes), not on Cityscapes val, so the mIoU rows "
                   "are not comparable. The published CPU timings were taken on a 2-core "
                   f"AVX-512 CPU with TF 2.21; ours ran on "
                   f"{machine.get('cpu_model') or 'an unknown CPU'} with "
                   f"{machine.get('logical_cores') or '?'} logical cores.")]
    if list(report.input_size) not in ([1025, 2049], [1024, 2048]):
        lines += ["", f"**Our latencies are at {size}, not at the published size: they are "
                      "not comparable with the published timings.**"]
    return lines


def _deployment_row(target: str, result: dict | None, report: ExportReport,
                    why: str) -> str:
    if result is None:
        return f"| {target} | n/a | n/a | n/a | n/a | n/a | {why} |"
    checked = verification(report, result)
    timing = _ms(result) if _ok(result) else (
        f"{result.get('status')}: {_cell(result.get('reason') or result.get('error'), 120)}")
    return (f"| {target} | `{result['artifact']}` | {result['runtime']} | {timing} | "
            f"{percent(checked.argmax_agreement if checked else None, 2)} | "
            f"{percent(checked.miou if checked else None)} | {why} |")


def _gpu_result(results: list[dict], model: str) -> dict | None:
    """The fp16 TFLite's GPU result, unless a software device timed it."""
    result = find(results, model, "tflite", "fp16", "tflite_gpu", None)
    return None if software_device(result) else result


def deployment_lines(latency: dict, report: ExportReport, threads: int) -> list[str]:
    """What to deploy where, from this run: per target the artifact and runtime to use, and
    every verified CPU result of the deployed (pruned) model, fastest first."""
    results = latency.get("results") or []
    model = report.pruned_model() or report.full_width_model()
    if model is None:
        return []
    fastest = fastest_verified(results, report, model, threads)
    serving = (find(results, model, "saved_model", "fp32", "tf_cpu_bf16", threads)
               if _ok(find(results, model, "saved_model", "fp32", "tf_cpu_bf16", threads))
               else find(results, model, "saved_model", "fp32", "tf_cpu", threads))
    lines = [f"## What to deploy (model `{model}`, measured here at {threads} threads)", "",
             "| target | artifact | runtime | median | agreement | mIoU | why |",
             "|---|---|---|---|---|---|---|",
             _deployment_row("Intel/AMD server with TF Serving", serving, report,
                             "TF Serving loads the SavedModel as is; for tf_cpu_bf16 enable "
                             "oneDNN bf16 auto mixed precision in its session config (see the "
                             "README)"),
             _deployment_row("x86 edge box or server, any runtime", fastest, report,
                             f"the fastest CPU result of this run with at least "
                             f"{percent(MIN_AGREEMENT, 0)} agreement and at most "
                             f"{100 * MAX_MIOU_DROP:g} pt of mIoU lost"),
             _deployment_row("ARM phone CPU", find(results, model, "tflite", "int8",
                                                   "tflite_xnnpack", threads), report,
                             "int8 XNNPACK kernels exist on ARM too; timed on this x86 CPU, "
                             "not on a phone"),
             _deployment_row("mobile GPU", _gpu_result(results, model), report,
                             "fp16 weights for the GPU delegate (LiteRT CompiledModel, GPU)"),
             "", f"Every verified CPU result of `{model}` at {threads} threads, fastest first "
                 f"(those below the accuracy bar marked):",
             "", "| artifact | runtime | median | agreement | mIoU |", "|---|---|---|---|---|"]
    verified = sorted((r for r in results if _ok(r) and r.get("model") == model
                       and r.get("threads") == threads and verification(report, r)),
                      key=lambda r: r["median_s"])
    for r in verified:
        checked = verification(report, r)
        mark = "" if passes(checked) else " (below the bar)"
        lines.append(f"| `{r['artifact']}` | {r['runtime']} | {_ms(r)} | "
                     f"{percent(checked.argmax_agreement, 2)}{mark} | {percent(checked.miou)} |")
    return lines


def _timing_text(settings: dict) -> str:
    rounds = settings.get("rounds") or 1
    text = (f"{settings.get('warmup', 'n/a')} warm-up calls, then {settings.get('runs', 'n/a')} "
            "timed calls per case, each case in a fresh process")
    if rounds > 1:
        text += (f"; {rounds} interleaved rounds of every case, statistics over the timed "
                 "calls of all rounds")
    return text


def markdown(latency: dict, report: ExportReport, ratio_threads: int = 2,
             plots: tuple[str, str] | None = (MIOU_PLOT, SIZE_PLOT)) -> str:
    """The report as Markdown.

    Args:
      latency: benchmarks.latency's JSON.
      report: the export's report.
      ratio_threads: thread count of the acceptance ratios and the reference comparison.
      plots: (mIoU plot, size plot) file names relative to the report, or None.
    """
    results = latency.get("results") or []
    settings = latency.get("settings") or {}
    full = report.full_width_model()
    lines = ["# ICNet deployment benchmark", ""]
    if not latency.get("complete", True):
        lines += ["**The latency run did not finish: the results below are partial.**", ""]
    lines += ["## Machine", ""] + _machine_lines(latency.get("machine") or {})
    lines += ["", "## Export", "",
              f"- export: `{settings.get('export_dir', 'n/a')}`",
              f"- input size: {'x'.join(str(n) for n in report.input_size)} "
              "(batch 1, one seeded random uint8 image)",
              f"- timing: {_timing_text(settings)}; peak RSS is the largest of a case's "
              "processes (runtime, model and inference)"]
    for name, model in report.models.items():
        lines.append(f"- model `{name}`: {_params(model)} parameters, {_gflops(model)} GFLOPs, "
                     f"{'pruned' if model.pruned else 'unpruned'}, fp32 mIoU "
                     f"{percent(_model_miou(report, name))}"
                     + (f" ({model.note})" if model.note else ""))
    if report.prune:
        lines += ["", "## Pruning", ""] + prune_lines(report.prune)
    lines += ["", "## Results", ""]
    bases = [baseline(results, full, t)
             for t in sorted({r.get("threads") for r in results if r.get("threads")})]
    first = next((b for b in bases if _ok(b)), None)
    if first:
        lines.append(f"Speedups are against the full-width fp32 model: `{first['artifact']}` "
                     f"(model `{full}`) under tf_cpu at the same thread count (marked "
                     "\"baseline\"); GPU rows against it at the largest measured thread count.")
    else:
        lines.append("No baseline: no ok fp32 SavedModel tf_cpu result of the full-width "
                     f"model ({full or 'none identified'}); speedups are n/a.")
    lines += ["", "Every runtime times the same work: one uint8 image in, the 1/4-resolution "
              "logits out (the SavedModel's and ONNX model's `class_ids` output is not "
              "fetched). Agreement (argmax agreement of the logits with the model's own fp32 Keras "
              "model) and mIoU are the export report's verification of the artifact under that "
              "runtime (n/a for runtimes the export does not verify).", "",
              _TABLE_HEADER, "|---" * 18 + "|"]
    lines += result_rows(latency, report)
    lines += ["", f"## Acceptance ratios ({ratio_threads} threads)", "",
              "Ratios of median latencies; met when the measured value is at most the target.",
              "", "| check | numerator | denominator | measured | target | verdict |",
              "|---|---|---|---|---|---|"]
    for row in acceptance_ratios(results, report, ratio_threads):
        if row["met"] is None:
            verdict = f"n/a ({row['why']})"
        else:
            verdict = "met" if row["met"] else "NOT met"
        value = row["value"]
        value_text = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float)
                                                  else value)
        target = "n/a" if row["target"] is None else f"<= {row['target']}"
        if row.get("note"):
            verdict += f" ({row['note']})"
        lines.append(f"| {row['check']} | {_cell(row['numerator'])} | "
                     f"{_cell(row['denominator'])} | {_cell(value_text)} | {target} | "
                     f"{_cell(verdict, 400)} |")
    lines += [""] + deployment_lines(latency, report, ratio_threads)
    lines += [""] + _reference_lines(latency, report, ratio_threads)
    if plots:
        lines += ["", "## Plots", "", f"![mIoU against median latency]({plots[0]})", "",
                  f"![size against median latency]({plots[1]})"]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Plots and files.


def _points(latency: dict, report: ExportReport, key: str) -> list[tuple]:
    """(latency ms, y, label, runtime) per ok result with a y value."""
    points = []
    for r in latency.get("results") or []:
        if not _ok(r) or software_device(r):
            continue
        if key == "miou":
            checked = verification(report, r)
            y = None if checked is None or checked.miou is None else 100 * checked.miou
        else:
            size = r.get("size_bytes")
            y = None if size is None else size / 2**20
        if y is None:
            continue
        threads = "gpu" if r.get("threads") is None else f"t{r['threads']}"
        label = f"{r.get('model') or '?'} {r.get('quantization') or '?'} {threads}"
        points.append((r["median_s"] * 1e3, y, label, r["runtime"]))
    return points


def _savefig_atomic(figure, path: str) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot(points: list[tuple], ylabel: str, title: str, path: str) -> None:
    """A labeled scatter plot of (latency ms, y) points, one color per runtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 6))
    runtimes = sorted({p[3] for p in points})
    colors = plt.get_cmap("tab10")
    for i, runtime in enumerate(runtimes):
        mine = [p for p in points if p[3] == runtime]
        axes.scatter([p[0] for p in mine], [p[1] for p in mine], color=colors(i % 10),
                     label=runtime, s=30)
    for x, y, label, _ in points:
        axes.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if not points:
        axes.text(0.5, 0.5, "no ok results to plot", ha="center", va="center",
                  transform=axes.transAxes)
    else:
        xs = [p[0] for p in points]
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            axes.set_xscale("log")
        axes.legend(fontsize=8)
    axes.set_xlabel("median latency, batch 1 (ms)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    _savefig_atomic(figure, path)
    plt.close(figure)


def write_report(latency: dict, report: ExportReport, out_dir: str,
                 ratio_threads: int = 2) -> str:
    """Writes REPORT.md and its two plots into `out_dir`; returns REPORT.md's path."""
    os.makedirs(out_dir, exist_ok=True)
    plot(_points(latency, report, "miou"), "mIoU (%) from the export report",
         "mIoU against latency (color: runtime)", os.path.join(out_dir, MIOU_PLOT))
    plot(_points(latency, report, "size"), "artifact size (MiB)",
         "size against latency (color: runtime)", os.path.join(out_dir, SIZE_PLOT))
    text = markdown(latency, report, ratio_threads, (MIOU_PLOT, SIZE_PLOT))
    path = os.path.join(out_dir, REPORT_NAME)
    atomic_write_bytes(path, text.encode())
    return path


def load_latency(path: str) -> dict:
    """benchmarks.latency's JSON.

    Raises:
      OptionError: missing, unreadable or not a latency file (naming latency).
    """
    if not os.path.isfile(path):
        raise OptionError("latency", f"{path}: no such file")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise OptionError("latency", f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise OptionError("latency", f"{path}: not a benchmarks.latency file (no results "
                                     f"list)")
    return data
