"""Latency, throughput and peak memory of every artifact of an export, per runtime and threads.

Examples:
  # Every artifact under TensorFlow, LiteRT and ONNX Runtime at 1 and 2 threads:
  python -m benchmarks.latency --export_dir exports/icnet --json reports/latency.json
  # TFLite with XNNPACK and ONNX Runtime only, 1/2/4 threads, plus the SavedModel under XLA:
  python -m benchmarks.latency --export_dir exports/p --runtimes tflite_xnnpack,onnx \\
      --threads 1,2,4 --warmup 3 --runs 20 --xla --json reports/latency.json

The artifacts are found by scanning --export_dir (`saved_model/<name>/<version>/`,
`tflite/*.tflite`, `onnx/*.onnx`), so a file the export report does not list is measured too;
the report only adds what it knows (model name, quantization). Each (artifact, runtime,
threads) case runs in a fresh process (`benchmarks.worker`): its thread settings take effect,
its peak RSS is its own, and a crash or a hang (--timeout_s) is recorded as `failed` while the
other cases still run. Every case times batch 1 on one seeded random uint8 image at the
artifact's own input size; GPU runtimes run once per artifact, CPU runtimes once per --threads
value. With --rounds R every case runs R times, the rounds interleaved (all cases, then all
again), and its median and p90 are over the timed calls of all rounds: a slow minute of the
machine then touches every case instead of the few that ran in it. Results are rewritten to
--json (atomically) after every case.

Runtimes (--runtimes takes these names and the families tf, tflite, onnx):
  tf_cpu, tf_gpu, tf_xla_cpu (only by name or with --xla); tflite_xnnpack, tflite_reference,
  tflite_gpu; onnxruntime_cpu, onnxruntime_cuda.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from benchmarks.machine import machine_info
from benchmarks.runtimes import FAMILIES, FAMILY_DEFAULTS, RUNTIMES, summarize
from deploy import report as export_lib
from icnet.cli import parse_choices
from icnet.fileio import atomic_write_bytes, size_on_disk

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUANTIZATIONS = ("fp32", "fp16", "dynamic", "int8", "qat")  # deploy.quantize's names
_FORMAT_ORDER = {"saved_model": 0, "onnx": 1, "tflite": 2}


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One exported artifact.

    Attributes:
      path: relative to the export dir (as in export_report.json).
      format: "saved_model", "tflite" or "onnx".
      model: model name (e.g. "icnet", "icnet_unpruned"), None when unknown.
      quantization: e.g. "fp32", "int8"; None when unknown.
      size_bytes: on disk (a SavedModel: all its files).
    """

    path: str
    format: str
    model: str | None
    quantization: str | None
    size_bytes: int


@dataclasses.dataclass(frozen=True)
class Case:
    artifact: Artifact
    runtime: str
    threads: int | None


def _guess(relative: str, fmt: str) -> tuple[str | None, str | None]:
    """(model, quantization) from the export's file naming."""
    parts = relative.split(os.sep)
    if fmt == "saved_model":
        return parts[1], "fp32"
    stem = os.path.splitext(parts[-1])[0]
    if fmt == "onnx":
        return stem, "fp32"
    model, _, quantization = stem.rpartition("_")
    if model and quantization in QUANTIZATIONS:
        return model, quantization
    return None, None


def discover_artifacts(export_dir: str, report: dict) -> tuple[list[Artifact], list[str]]:
    """Every artifact on disk, described by the export report where it lists them.

    Returns:
      (the artifacts, SavedModels first, then ONNX, then TFLite; the report's artifact paths
      that are not on disk).
    """
    found = []
    base = os.path.join(export_dir, "saved_model")
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            model_dir = os.path.join(base, name)
            if not os.path.isdir(model_dir):
                continue
            for version in sorted((v for v in os.listdir(model_dir) if v.isdigit()), key=int):
                if os.path.isfile(os.path.join(model_dir, version, "saved_model.pb")):
                    found.append((os.path.join("saved_model", name, version), "saved_model"))
    for fmt, extension in (("tflite", ".tflite"), ("onnx", ".onnx")):
        top = os.path.join(export_dir, fmt)
        for root, _, names in sorted(os.walk(top)):
            for name in sorted(names):
                if name.endswith(extension):
                    found.append((os.path.relpath(os.path.join(root, name), export_dir), fmt))
    listed = {}
    for entry in report.get("artifacts") or []:
        if isinstance(entry, dict) and entry.get("path"):
            listed[os.path.normpath(entry["path"])] = entry
    artifacts = []
    for relative, fmt in found:
        entry = listed.get(os.path.normpath(relative), {})
        model, quantization = _guess(relative, fmt)
        artifacts.append(Artifact(
            path=relative, format=fmt, model=entry.get("model", model),
            quantization=entry.get("quantization", quantization),
            size_bytes=size_on_disk(os.path.join(export_dir, relative))))
    artifacts.sort(key=lambda a: (_FORMAT_ORDER[a.format], a.path))
    on_disk = {os.path.normpath(a.path) for a in artifacts}
    missing = sorted(p for p in listed if p not in on_disk)
    return artifacts, missing


def parse_runtimes(text: str, xla: bool = False) -> tuple[str, ...]:
    """Runtime names from a comma-separated list of runtimes and families.

    Raises:
      ValueError: an unknown name or an empty list (naming --runtimes).
    """
    names = parse_choices(text, (*FAMILIES, *RUNTIMES), "runtimes")
    chosen = {runtime for name in names for runtime in FAMILY_DEFAULTS.get(name, (name,))}
    if xla:
        chosen.add("tf_xla_cpu")
    return tuple(name for name in RUNTIMES if name in chosen)


def parse_threads(text: str) -> tuple[int, ...]:
    """Thread counts from e.g. "1,2,4".

    Raises:
      ValueError: not positive integers, or none (naming --threads).
    """
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--threads: expected comma-separated integers such as 1,2,4, got "
                         f"{text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--threads: thread counts must be >= 1, got {text!r}")
    return tuple(sorted(set(values)))


def plan_cases(artifacts: Sequence[Artifact], runtimes: Sequence[str],
               threads: Sequence[int]) -> list[Case]:
    """One case per (artifact, runtime of its format, thread count); GPU runtimes once."""
    cases = []
    for artifact in artifacts:
        for name in runtimes:
            runtime = RUNTIMES[name]
            if runtime.format != artifact.format:
                continue
            for count in ((None,) if runtime.gpu else threads):
                cases.append(Case(artifact, name, count))
    return cases


_GLOG_PREFIX = re.compile(r"^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] ")
_LOCATION_PREFIX = re.compile(r"^(ERROR|WARNING): \[[^\]]*\]\s*")


def native_errors(stderr: str, limit: int = 4) -> list[str]:
    """Error-level lines the runtimes' native code logged (LiteRT, TF, Dawn), prefixes cut."""
    lines = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("ERROR: ") or re.match(r"^E\d{4} ", line):
            message = _LOCATION_PREFIX.sub("", _GLOG_PREFIX.sub("", line)).strip()
        elif line.startswith("Warning: Couldn't load"):
            message = line
        else:
            continue
        if message and message not in lines:
            lines.append(message)
    return lines[-limit:]


def _tail(text: str, lines: int = 15, chars: int = 2000) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


def _worker_env(runtime: str, threads: int | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env["PYTHONFAULTHANDLER"] = "1"  # a crash leaves the Python stack in the error
    if not RUNTIMES[runtime].gpu:
        env["CUDA_VISIBLE_DEVICES"] = "-1"  # CPU cases never initialise a GPU
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_worker(command: Sequence[str], result_path: str, env: dict | None,
               timeout_s: float) -> dict:
    """Runs a worker command that writes its result to `result_path`.

    Returns:
      The worker's result, or a `failed` result for a crash (exit status or signal and the
      stderr tail), a hang (killed after `timeout_s`) or an unreadable result. A non-ok
      result gets the native error lines of the worker's stderr appended to its reason.
    """
    begin = time.perf_counter()
    try:
        done = subprocess.run(list(command), env=env, capture_output=True, timeout=timeout_s,
                              cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout_s:g} s",
                "wall_s": time.perf_counter() - begin}
    wall = time.perf_counter() - begin
    stderr = done.stderr.decode("utf-8", "replace")
    result = None
    if os.path.exists(result_path):
        try:
            with open(result_path) as f:
                result = json.load(f)
        except (OSError, ValueError) as e:
            result = {"status": "failed", "error": f"unreadable worker result: {e}"}
    if result is None:
        code = done.returncode
        how = f"exit code {code}"
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name} (exit code {code})"
            except ValueError:
                pass
        return {"status": "failed", "error": f"worker {how}: {_tail(stderr)}".strip(),
                "wall_s": wall}
    result["wall_s"] = wall
    if result.get("status") != "ok":
        log = native_errors(stderr)
        if log:
            result["log"] = log
            key = "reason" if result["status"] == "unavailable" else "error"
            result[key] = f"{result.get(key, '')}; native log: {' | '.join(log)}"
    return result


def run_in_subprocess(export_dir: str, case: Case, warmup: int, runs: int, seed: int,
                      timeout_s: float) -> dict:
    """Runs one case in a fresh `benchmarks.worker` process (see `run_worker`)."""
    spec = {"path": os.path.join(export_dir, case.artifact.path), "runtime": case.runtime,
            "threads": case.threads, "warmup": warmup, "runs": runs, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="latency_case_") as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec), out]
        return run_worker(command, out, _worker_env(case.runtime, case.threads), timeout_s)


def write_json_atomic(data: dict, path: str) -> None:
    """Writes JSON through a temporary file renamed into place."""
    atomic_write_bytes(path, json.dumps(data, indent=1).encode())


_RESULT_KEYS = ("median_s", "p90_s", "fps", "peak_rss_bytes")


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


def benchmark(export_dir: str, runtimes: Sequence[str], threads: Sequence[int],
              warmup: int = 3, runs: int = 10, seed: int = 0, timeout_s: float = 600,
              on_update: Callable[[dict], None] | None = None, rounds: int = 1) -> dict:
    """Measures every artifact of an export under every asked-for runtime and thread count.

    Args:
      export_dir: an export (see deploy.export).
      runtimes: runtime names (see benchmarks.runtimes.RUNTIMES).
      threads: thread counts of the CPU runtimes.
      warmup: untimed calls before timing (the first call is one of them).
      runs: timed calls per case and round.
      seed: seed of the random input image.
      timeout_s: wall-clock limit of one case (its process is killed after it).
      on_update: called with the results so far after every case (to save progress).
      rounds: how often every case runs, interleaved (see the module docstring).

    Returns:
      {"machine", "settings", "results", "complete"}.

    Raises:
      ValueError, FileNotFoundError: a bad export dir, no artifacts, bad settings.
    """
    if not os.path.isdir(export_dir):
        raise FileNotFoundError(f"--export_dir: {export_dir}: no such directory")
    if warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {warmup}")
    if runs < 1:
        raise ValueError(f"--runs must be >= 1, got {runs}")
    if timeout_s <= 0:
        raise ValueError(f"--timeout_s must be positive, got {timeout_s}")
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}")
    report = export_lib.read(export_dir)
    artifacts, missing = discover_artifacts(export_dir, report)
    if not artifacts:
        raise ValueError(f"--export_dir: {export_dir}: no artifacts (saved_model/<name>/"
                         f"<version>/, tflite/*.tflite, onnx/*.onnx)")
    for path in missing:
        logging.warning("%s is listed in %s but not on disk", path, export_lib.JSON_NAME)
    cases = plan_cases(artifacts, runtimes, threads)
    if not cases:
        raise ValueError(f"--runtimes: none of {', '.join(runtimes)} runs the formats present "
                         f"({', '.join(sorted({a.format for a in artifacts}))})")
    data = {
        "machine": machine_info(),
        "settings": {"export_dir": os.path.abspath(export_dir), "runtimes": list(runtimes),
                     "threads": list(threads), "warmup": warmup, "runs": runs, "rounds": rounds,
                     "seed": seed, "timeout_s": timeout_s, "batch": 1,
                     "input_size": report.get("input_size"),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "missing_artifacts": missing,
                     "runtime_descriptions": {n: RUNTIMES[n].description for n in runtimes}},
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
                outcome = run_in_subprocess(export_dir, case, warmup, runs, seed, timeout_s)
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


def _case_result(case: Case, outcome: dict) -> dict:
    artifact = case.artifact
    return {"artifact": artifact.path, "model": artifact.model, "format": artifact.format,
            "quantization": artifact.quantization, "size_bytes": artifact.size_bytes,
            "runtime": case.runtime, "threads": case.threads,
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


# The binary. Its flags are defined only when it runs (importing this module defines none, so
# tests and other binaries can import it).


def define_flags() -> None:
    """Defines the binary's flags."""
    flags.DEFINE_string("export_dir", None, "Export directory (see deploy.export).")
    flags.DEFINE_string("runtimes", "tf,tflite,onnx", "Comma-separated runtimes or families: "
                        f"{', '.join(FAMILIES)}, {', '.join(RUNTIMES)}.")
    flags.DEFINE_string("threads", "1,2", "Comma-separated thread counts of the CPU runtimes.")
    flags.DEFINE_integer("warmup", 3, "Untimed calls before timing (the first is one of them).")
    flags.DEFINE_integer("runs", 10, "Timed calls per case and round.")
    flags.DEFINE_integer("rounds", 1, "Times every case runs, the rounds interleaved; the "
                         "statistics are over the timed calls of all rounds.")
    flags.DEFINE_bool("xla", False, "Also time the SavedModel under XLA on CPU (tf_xla_cpu).")
    flags.DEFINE_integer("seed", 0, "Seed of the random input image.")
    flags.DEFINE_float("timeout_s", 600, "Wall-clock limit of one case, in seconds.")
    flags.DEFINE_string("json", None, "Output JSON file (rewritten after every case).")


FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        if not FLAGS.export_dir:
            raise ValueError("--export_dir is required")
        if not FLAGS.json:
            raise ValueError("--json is required")
        runtimes = parse_runtimes(FLAGS.runtimes, FLAGS.xla)
        threads = parse_threads(FLAGS.threads)
        output = FLAGS.json
        data = benchmark(FLAGS.export_dir, runtimes, threads, FLAGS.warmup, FLAGS.runs,
                         FLAGS.seed, FLAGS.timeout_s,
                         on_update=lambda partial: write_json_atomic(partial, output),
                         rounds=FLAGS.rounds)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    write_json_atomic(data, FLAGS.json)
    counts = {}
    for result in data["results"]:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    logging.info("wrote %s: %s", FLAGS.json,
                 ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))


if __name__ == "__main__":
    define_flags()
    app.run(main)
