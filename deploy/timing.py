"""One timing loop for every runtime, and one benchmark case run in this process.

TensorFlow-free: `run_case` opens the artifact under its runtime (deploy.runtimes), warms up
and times `session.run(feed)` on one seeded random uint8 image at the artifact's input size:
one image in, the 1/4-resolution logits out in host memory, the same work on every runtime.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from deploy import runtimes


def seeded_image(input_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A random uint8 RGB batch [1, H, W, 3], the same for every runtime with the same seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(1, *input_size, 3), dtype=np.uint8)


def measure(call: Callable, feed, warmup: int, runs: int) -> list[float]:
    """Seconds per call of `call(feed)`: `warmup` untimed calls, then `runs` timed ones."""
    for _ in range(warmup):
        call(feed)
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        call(feed)
        times.append(time.perf_counter() - begin)
    return times


def summarize(times: list[float]) -> dict:
    """Median, p90 (linear interpolation), mean, min, max and fps (1 / median)."""
    median = statistics.median(times)
    return {"median_s": median, "p90_s": float(np.percentile(times, 90)),
            "mean_s": statistics.fmean(times), "min_s": min(times), "max_s": max(times),
            "fps": 1.0 / median if median > 0 else None}


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size.

    VmHWM of /proc/self/status where there is one: `getrusage`'s ru_maxrss survives exec on
    Linux, so in a child it is at least the parent's RSS when it forked.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(path: str, runtime: runtimes.Runtime, threads: int | None, warmup: int,
             runs: int, seed: int = 0) -> dict:
    """Opens, warms up and times one case; never raises for a bad artifact or runtime.

    Returns:
      {"status": "ok", "median_s", "p90_s", ..., "times_s", "load_s", "first_call_s",
      "input_size", "input_dtype"} (and the session's `info`), or {"status": "unavailable",
      "reason", "machine_wide"}, or {"status": "failed", "error", "stage"}; each with
      "peak_rss_bytes".
    """
    result: dict = {}
    stage = "load"
    try:
        begin = time.perf_counter()
        session = runtime.open(path, threads)
        result.update(load_s=time.perf_counter() - begin, input_size=list(session.input_size),
                      input_dtype=session.input_dtype, **session.info)
        stage = "run"
        feed = session.prepare(seeded_image(session.input_size, seed))
        if warmup > 0:  # the first call (tracing, compilation, delegate setup) is one of them
            begin = time.perf_counter()
            session.run(feed)
            result["first_call_s"] = time.perf_counter() - begin
            times = measure(session.run, feed, warmup - 1, runs)
        else:
            times = measure(session.run, feed, 0, runs)
            result["first_call_s"] = times[0]
        result.update(status="ok", **summarize(times), times_s=times)
    except runtimes.Unavailable as e:
        result.update(status="unavailable", reason=e.reason, machine_wide=e.machine_wide)
    except Exception as e:  # noqa: BLE001 - any runtime error of this case is its result
        result.update(status="failed", error=runtimes.error_text(e), stage=stage)
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result
