"""Runs one benchmark case in this process and writes its result as JSON (used by
benchmarks.latency, which starts one worker process per case).

Example (what benchmarks.latency starts for every case):
  python -m benchmarks.worker '{"path": "exports/icnet/tflite/icnet_int8.tflite",
      "runtime": "tflite_xnnpack", "module": "deploy.runtimes.litert", "threads": 2,
      "warmup": 3, "runs": 10, "seed": 0}' out.json

`module` is imported first, so a runtime registered outside deploy.runtimes runs here too. The
result is written to the second argument (not stdout, which runtimes may print to). A crash of
the runtime leaves no result: the caller records the exit status instead.
"""

from __future__ import annotations

import json
import sys

from icnet.fileio import atomic_write_bytes


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} SPEC_JSON RESULT_PATH", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    from deploy.timing import run_case
    from deploy import runtimes

    runtime = runtimes.load(spec["runtime"], spec.get("module"))
    result = run_case(spec["path"], runtime, spec.get("threads"), spec["warmup"], spec["runs"],
                      spec.get("seed", 0))
    atomic_write_bytes(argv[2], json.dumps(result).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
