"""Latency, throughput and peak memory of every artifact of an export, per runtime and threads.

Examples:
  # Every artifact under TensorFlow, LiteRT and ONNX Runtime at 1 and 2 threads:
  python -m benchmarks.latency --export_dir exports/icnet --json reports/latency.json
  # TFLite with XNNPACK and ONNX Runtime only, 1/2/4 threads, plus the SavedModel under XLA:
  python -m benchmarks.latency --export_dir exports/p --runtimes tflite_xnnpack,onnx \
      --threads 1,2,4 --warmup 3 --runs 20 --xla --json reports/latency.json

Every case times batch 1 on one seeded random uint8 image at the artifact's own input size,
in its own process (benchmarks.latency_lib). Results are rewritten to --json (atomically)
after every case; SIGINT/SIGTERM stop the run (exit code 75, the partial results kept in
--json with "complete": false); a rerun starts over.

Runtimes (--runtimes takes these names and the families tf, tflite, onnx, openvino): every
runtime registered in deploy.runtimes: tf_cpu, tf_cpu_bf16, tf_gpu, tf_xla_cpu (only by name
or with --xla); tflite_xnnpack, tflite_reference, tflite_xnnpack_fp16, tflite_gpu;
onnxruntime_cpu, onnxruntime_cuda; openvino_cpu, openvino_cpu_bf16.
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from benchmarks.latency_lib import benchmark, parse_runtimes, parse_threads
from deploy import runtimes
from icnet import exits
from icnet.fileio import atomic_write_bytes

flags.DEFINE_string("export_dir", None, "Export directory (see deploy.export).")
flags.DEFINE_string("runtimes", ",".join(runtimes.FAMILIES),
                    "Comma-separated runtimes or families.")
flags.DEFINE_string("threads", "1,2", "Comma-separated thread counts of the CPU runtimes.")
flags.DEFINE_integer("warmup", 3, "Untimed calls before timing (the first is one of them).")
flags.DEFINE_integer("runs", 10, "Timed calls per case and round.")
flags.DEFINE_integer("rounds", 1, "Times every case runs, the rounds interleaved; the "
                     "statistics are over the timed calls of all rounds.")
flags.DEFINE_bool("xla", False, "Also time the SavedModel under XLA on CPU (tf_xla_cpu).")
flags.DEFINE_integer("seed", 0, "Seed of the random input image.")
flags.DEFINE_float("timeout_s", 600, "Wall-clock limit of one case, in seconds.")
flags.DEFINE_bool("software_gpu", False, "Run tflite_gpu on the software Vulkan device of "
                  "`make gpu-sim` (results labelled: the GPU path's numerics, not GPU times).")
flags.DEFINE_string("json", None, "Output JSON file (rewritten after every case).")
FLAGS = flags.FLAGS


def _write(data: dict) -> None:
    atomic_write_bytes(FLAGS.json, json.dumps(data, indent=1).encode())


def _main() -> None:
    for name in ("export_dir", "json"):
        if not getattr(FLAGS, name):
            raise exits.OptionError(name, "is required")
    data = benchmark(FLAGS.export_dir, parse_runtimes(FLAGS.runtimes, FLAGS.xla),
                     parse_threads(FLAGS.threads), FLAGS.warmup, FLAGS.runs, FLAGS.seed,
                     FLAGS.timeout_s, on_update=_write, rounds=FLAGS.rounds,
                     software_gpu=FLAGS.software_gpu)
    _write(data)
    counts = {}
    for result in data["results"]:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    logging.info("wrote %s: %s", FLAGS.json,
                 ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
