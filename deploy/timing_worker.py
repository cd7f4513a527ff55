"""Timing in a fresh worker process: the runtime's thread settings take effect, its peak RSS
is its own, a crash or a hang is a `failed` result, and nothing this process ran before
(TensorFlow's and oneDNN's threads stay busy after their work: an int8 TFLite model timed in a
process that has just run TensorFlow ran up to 1.7x slower here) skews the timing.

Run as a module, this is the worker (what `time_artifact` starts for every case):
  python -m deploy.timing_worker '{"path": "exports/icnet/tflite/icnet_int8.tflite",
      "runtime": "tflite_xnnpack", "module": "deploy.runtimes.litert", "threads": 2,
      "warmup": 3, "runs": 10, "seed": 0}' out.json

`module` is imported first, so a runtime registered outside deploy.runtimes runs here too. The
result is written to the second argument (not stdout, which runtimes may print to). A crash of
the runtime leaves no result: the caller records the exit status instead. TensorFlow-free.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from deploy import runtimes, vulkan
from deploy.timing import run_case
from icnet.fileio import atomic_write_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def worker_env(runtime: runtimes.Runtime, threads: int | None, software_gpu: bool) -> dict:
    # With `software_gpu`, LiteRT's GPU accelerator sees the software Vulkan device of
    # `make gpu-sim` (its results are labelled as such).
    use_sim = software_gpu and runtime.engine == "litert" and runtime.device == "gpu"
    env = vulkan.environment() if use_sim else dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env["PYTHONFAULTHANDLER"] = "1"  # a crash leaves the Python stack in the error
    if runtime.device != "gpu":
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


def time_artifact(path: str, name: str, threads: int | None, warmup: int, runs: int,
                  seed: int = 0, timeout_s: float = 600, software_gpu: bool = False) -> dict:
    """Times one artifact under one runtime in a fresh worker process (this module) (see
    `run_worker`); `software_gpu`: LiteRT's GPU runtime on `make gpu-sim`'s device."""
    runtime = runtimes.get(name)
    spec = {"path": path, "runtime": name, "module": type(runtime).__module__,
            "threads": threads, "warmup": warmup, "runs": runs, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="latency_case_") as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, "-m", "deploy.timing_worker", json.dumps(spec), out]
        return run_worker(command, out, worker_env(runtime, threads, software_gpu),
                          timeout_s)


def main(argv: list[str]) -> int:
    """The worker: times the case of the JSON spec `argv[1]`, writes its result to `argv[2]`."""
    if len(argv) != 3:
        print(f"usage: {argv[0]} SPEC_JSON RESULT_PATH", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    runtime = runtimes.load(spec["runtime"], spec.get("module"))
    result = run_case(spec["path"], runtime, spec.get("threads"), spec["warmup"], spec["runs"],
                      spec.get("seed", 0))
    atomic_write_bytes(argv[2], json.dumps(result).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
