"""Every distinct convolution of a channel plan, timed alone in TensorFlow and in LiteRT (XNNPACK).

Examples:
  python -m benchmarks.conv_latency --filter_scale 2 --input_size 1025x2049 --threads 2
  python -m benchmarks.conv_latency --model runs/demo/export/pruned_model --json convs.json
  python -m benchmarks.conv_latency --filter_scale 2 --split_mib 1.2

Prints a Markdown table (and writes --json): every convolution's shape, fp32 kernel size,
GFLOPs and milliseconds in both runtimes, sorted by how much longer LiteRT takes; with
--split_mib, a second table of the wide convolutions timed as output-channel groups
(benchmarks.conv_timing).
"""

from __future__ import annotations

import json

import tensorflow as tf
from absl import app, flags

from benchmarks.conv_timing import measure_plan, table
from icnet import exits
from icnet.cli import parse_size
from icnet.fileio import atomic_write_bytes
from icnet.model import MIN_INPUT_SIZE
from train.common_flags import define_plan_flags, plan_from_flags

define_plan_flags(filter_scale=2.0)
flags.DEFINE_string("input_size", "1025x2049", "Input HxW of the model.")
flags.DEFINE_integer("threads", 2, "Threads of both runtimes.")
flags.DEFINE_integer("warmup", 2, "Untimed calls per convolution and runtime.")
flags.DEFINE_integer("runs", 5, "Timed calls per convolution and runtime.")
flags.DEFINE_float("split_mib", None, "Also time every convolution whose fp32 kernel exceeds "
                   "this many MiB split into output-channel groups of at most this size.")
flags.DEFINE_string("json", None, "Also write the rows and totals to this JSON file.")
FLAGS = flags.FLAGS


def _main() -> None:
    size = parse_size(FLAGS.input_size, "input_size", MIN_INPUT_SIZE)
    for name, minimum in (("threads", 1), ("runs", 1), ("warmup", 0)):
        if FLAGS[name].value < minimum:
            raise exits.OptionError(name, f"must be >= {minimum}, got {FLAGS[name].value}")
    if FLAGS.split_mib is not None and FLAGS.split_mib <= 0:
        raise exits.OptionError("split_mib", f"must be > 0, got {FLAGS.split_mib}")
    config, source = plan_from_flags()
    # Before TensorFlow runs anything: its thread pools are fixed at the first op.
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.set_visible_devices([], "GPU")
    result = measure_plan(config, size, FLAGS.threads, FLAGS.warmup, FLAGS.runs,
                          FLAGS.split_mib)
    result["settings"] = {"input_size": list(size), "threads": FLAGS.threads,
                          "warmup": FLAGS.warmup, "runs": FLAGS.runs, "source": source,
                          "split_mib": FLAGS.split_mib}
    if FLAGS.json:
        atomic_write_bytes(FLAGS.json, json.dumps(result, indent=1).encode())
    print(table(result))


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
