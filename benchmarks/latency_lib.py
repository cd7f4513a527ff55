"""benchmarks.latency's work: every artifact of an export under every runtime that runs it.

The artifacts are the export report's (deploy.report) plus any other file the layout finds on
disk (deploy.layout.discover), so a file the report does not list is measured too. Each
(artifact, runtime, threads) case runs in a fresh `deploy.timing_worker` process: its thread
settings take effect, its peak RSS is its own, and a crash or a hang is recorded as `failed`
while the other cases still run. GPU runtimes run once per artifact, CPU runtimes once per
thread count. With `rounds` R every case runs R times, interleaved (all cases, then all
again), and its statistics are over the timed calls of all rounds.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

from absl import logging

from benchmarks.machine import machine_info
from deploy.timing import summarize
from deploy.timing_worker import time_artifact
from deploy import layout, runtimes
from deploy.report import ExportReport
from icnet.exits import OptionError

_FORMAT_ORDER = {fmt: index for index, fmt in enumerate(("saved_model", "onnx", "openvino",
                                                          "tflite"))}


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One artifact to time: its path (relative to the export dir), what it is, its size,
    and (runtime -> what fell below the export's accuracy floors) where something did."""

    path: str
    format: str
    model: str | None
    quantization: str | None
    size_bytes: int
    below_floor: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Case:
    artifact: Artifact
    runtime: str
    threads: int | None


def read_report(export_dir: str) -> ExportReport | None:
    """The export's report, or None (with a warning) when it is missing or unreadable."""
    try:
        return ExportReport.read(export_dir)
    except (OSError, ValueError) as e:
        logging.warning("%s; artifacts are described from their file names", e)
        return None


def artifacts_of(export_dir: str, report: ExportReport | None) -> tuple[list[Artifact],
                                                                       list[str]]:
    """(every artifact on disk, described by the report where it lists it; the report's
    artifact paths that are not on disk)."""
    listed = {os.path.normpath(a.path): a for a in (report.artifacts if report else [])}
    found = []
    for name in layout.discover(export_dir):
        entry = listed.get(os.path.normpath(name.path))
        found.append(Artifact(
            path=name.path, format=name.format,
            model=entry.model if entry else name.model,
            quantization=entry.quantization if entry else name.quantization,
            size_bytes=layout.artifact_size(os.path.join(export_dir, name.path)),
            below_floor=tuple((v.runtime, v.below_floor) for v in
                              (entry.verifications if entry else []) if v.below_floor)))
    found.sort(key=lambda a: (_FORMAT_ORDER.get(a.format, len(_FORMAT_ORDER)), a.path))
    on_disk = {os.path.normpath(a.path) for a in found}
    return found, sorted(p for p in listed if p not in on_disk)


def parse_runtimes(text: str, xla: bool = False) -> tuple[str, ...]:
    """Runtime names from a comma-separated list of runtimes and families.

    Raises:
      OptionError: an unknown name or an empty list (naming runtimes).
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in runtimes.FAMILIES and n not in runtimes.REGISTRY]
    if unknown or not names:
        raise OptionError("runtimes", f"unknown {unknown or 'empty list'}; choose from "
                          f"{', '.join([*runtimes.FAMILIES, *runtimes.REGISTRY])}")
    chosen = runtimes.expand(names + (["tf_xla_cpu"] if xla else []))
    return chosen


def parse_threads(text: str) -> tuple[int, ...]:
    """Thread counts from e.g. "1,2,4".

    Raises:
      OptionError: not positive integers, or none (naming threads).
    """
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError("threads", f"expected comma-separated integers such as 1,2,4, got "
                                     f"{text!r}") from None
    if not values or min(values) < 1:
        raise OptionError("threads", f"thread counts must be >= 1, got {text!r}")
    return tuple(sorted(set(values)))


def plan_cases(artifacts: Sequence[Artifact], names: Sequence[str],
               threads: Sequence[int]) -> list[Case]:
    """One case per (artifact, runtime of its format, thread count); GPU runtimes once."""
    cases = []
    for artifact in artifacts:
        for name in names:
            runtime = runtimes.get(name)
            if runtime.format != artifact.format:
                continue
            for count in ((None,) if runtime.device == "gpu" else threads):
                cases.append(Case(artifact, name, count))
    return cases


def run_in_subprocess(export_dir: str, case: Case, warmup: int, runs: int, seed: int,
                      timeout_s: float, software_gpu: bool = False) -> dict:
    """Runs one case of an export in a fresh worker process (`time_artifact`)."""
    return time_artifact(os.path.join(export_dir, case.artifact.path), case.runtime,
                         case.threads, warmup, runs, seed, timeout_s, software_gpu)


def merge_rounds(outcomes: Sequence[dict]) -> dict:
    """One case's result over its rounds so far.

    Returns:
      The first result that is not ok, if any (with `rounds_ok`, the ok rounds before it);
      otherwise the first round's result (load and first-call times of a cold start) with the
      statistics over the timed calls of every round, `round_medians_s`, the largest peak RSS
      and the summed wall time.
    """
    for index, outcome in enumerate(outcomes):
        if outcome.get("status") != "ok":
            return {**outcome, "rounds_ok": index} if len(outcomes) > 1 else outcome
    if len(outcomes) == 1:
        return outcomes[0]
    times = [t for outcome in outcomes for t in outcome["times_s"]]
    peaks = [o["peak_rss_bytes"] for o in outcomes if o.get("peak_rss_bytes") is not None]
    return {**outcomes[0], **summarize(times), "times_s": times,
            "round_medians_s": [o["median_s"] for o in outcomes],
            "peak_rss_bytes": max(peaks) if peaks else None,
            "wall_s": sum(o.get("wall_s", 0.0) for o in outcomes)}


_RESULT_KEYS = ("median_s", "p90_s", "fps", "peak_rss_bytes")


def _case_result(case: Case, outcome: dict) -> dict:
    artifact = case.artifact
    return {"artifact": artifact.path, "model": artifact.model, "format": artifact.format,
            "quantization": artifact.quantization, "size_bytes": artifact.size_bytes,
            "runtime": case.runtime, "threads": case.threads,
            "below_floor": dict(artifact.below_floor).get(case.runtime),
            **{key: None for key in _RESULT_KEYS}, **outcome}


def _log_case(result: dict, number: int, count: int, round_number: int, rounds: int) -> None:
    threads_text = "gpu" if result["threads"] is None else f"{result['threads']} threads"
    if result["status"] == "ok":
        summary = (f"median {result['median_s']:.4f} s, p90 {result['p90_s']:.4f} s, "
                   f"{result['fps']:.2f} fps, peak RSS "
                   f"{(result['peak_rss_bytes'] or 0) / 2**20:.0f} MiB")
    else:
        summary = f"{result['status']}: {result.get('reason') or result.get('error')}"
    where = f"round {round_number}/{rounds}, " if rounds > 1 else ""
    logging.info("%scase %d/%d: %s %s %s: %s", where, number, count, result["artifact"],
                 result["runtime"], threads_text, summary)


def benchmark(export_dir: str, names: Sequence[str], threads: Sequence[int],
              warmup: int = 3, runs: int = 10, seed: int = 0, timeout_s: float = 600,
              on_update: Callable[[dict], None] | None = None, rounds: int = 1,
              execute: Callable[..., dict] = run_in_subprocess,
              software_gpu: bool = False) -> dict:
    """Measures every artifact of an export under every asked-for runtime and thread count.

    Args:
      export_dir: an export (see deploy.export).
      names: runtime names (deploy.runtimes.REGISTRY).
      threads: thread counts of the CPU runtimes.
      warmup: untimed calls before timing (the first call is one of them).
      runs: timed calls per case and round.
      seed: seed of the random input image.
      timeout_s: wall-clock limit of one case (its process is killed after it).
      on_update: called with the results so far after every case (to save progress).
      rounds: how often every case runs, interleaved (see the module docstring).
      execute: runs one case (`run_in_subprocess`; tests may run cases in-process).
      software_gpu: run LiteRT's GPU runtime on the software Vulkan device of `make gpu-sim`
        (its results say so: the GPU path's numerics, not GPU times).

    Returns:
      {"machine", "settings", "results", "complete"}.

    Raises:
      OptionError, FileNotFoundError: a bad export dir, no artifacts, bad settings.
    """
    if not os.path.isdir(export_dir):
        raise OptionError("export_dir", f"{export_dir}: no such directory")
    for option, value, minimum in (("warmup", warmup, 0), ("runs", runs, 1),
                                   ("rounds", rounds, 1)):
        if value < minimum:
            raise OptionError(option, f"must be >= {minimum}, got {value}")
    if timeout_s <= 0:
        raise OptionError("timeout_s", f"must be positive, got {timeout_s}")
    report = read_report(export_dir)
    artifacts, missing = artifacts_of(export_dir, report)
    if not artifacts:
        raise OptionError("export_dir", f"{export_dir}: no artifacts (saved_model/<name>/"
                                        f"<version>/, tflite/*.tflite, onnx/*.onnx)")
    for path in missing:
        logging.warning("%s is listed in %s but not on disk", path, layout.REPORT_JSON)
    cases = plan_cases(artifacts, names, threads)
    if not cases:
        raise OptionError("runtimes", f"none of {', '.join(names)} runs the formats present "
                                      f"({', '.join(sorted({a.format for a in artifacts}))})")
    data = {
        "machine": machine_info(),
        "settings": {"export_dir": os.path.abspath(export_dir), "runtimes": list(names),
                     "threads": list(threads), "warmup": warmup, "runs": runs, "rounds": rounds,
                     "seed": seed, "timeout_s": timeout_s, "batch": 1,
                     "software_gpu": software_gpu,
                     "input_size": report.input_size if report else None,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "missing_artifacts": missing,
                     "runtime_descriptions": {n: runtimes.get(n).description for n in names}},
        "results": [],
        "complete": False,
    }
    machine_wide = {}  # runtime -> the result of a case that found it unavailable here
    outcomes: list[list[dict]] = [[] for _ in cases]
    for round_index in range(rounds):
        for index, case in enumerate(cases):
            if outcomes[index] and outcomes[index][-1].get("status") != "ok":
                continue  # failed or unavailable: once is enough
            if case.runtime in machine_wide:
                outcome = {key: machine_wide[case.runtime][key] for key in
                           ("status", "reason", "log") if key in machine_wide[case.runtime]}
                outcome["checked_once"] = True
            else:
                outcome = execute(export_dir, case, warmup, runs, seed, timeout_s, software_gpu)
                if outcome.get("status") == "unavailable" and outcome.get("machine_wide"):
                    machine_wide[case.runtime] = outcome
            outcomes[index].append(outcome)
            result = _case_result(case, merge_rounds(outcomes[index]))
            if round_index == 0:
                data["results"].append(result)
            else:
                data["results"][index] = result
            _log_case(result, index + 1, len(cases), round_index + 1, rounds)
            if on_update is not None:
                on_update(data)
    data["complete"] = True
    data["settings"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return data
