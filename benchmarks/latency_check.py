"""How good is the latency table's estimate? The uniform-keep plan estimated against measured.

Example:
  python -m benchmarks.latency_check --filter_scale 2 --input_size 1025x2049 \
      --target_runtime tflite_xnnpack --target_quantization int8 --target_threads 2 \
      --keep 0.5 --round_to 8 --output_dir reports/budget

Measures (or reuses) the plan's latency table in --output_dir, measures the source model and
the narrowest plan (every group at --min_keep) on the target to anchor it, as the budget
search does, estimates the model pruned uniformly to --keep and measures that model too
(random weights: latency does not depend on their values); writes latency_check.json with
both numbers and the estimate's error.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from deploy.budget import narrowest_plan
from deploy.latency_table import LatencyTable, Target, default_table_path, measure_model
from deploy.pruning import check_keep, model_groups, prune, prune_plan
from icnet import exits
from icnet.cli import parse_size
from icnet.fileio import atomic_write_bytes
from icnet.model import MIN_INPUT_SIZE
from icnet.weights import initial_weights
from train.common_flags import define_plan_flags, plan_from_flags

define_plan_flags(filter_scale=2.0)
flags.DEFINE_string("input_size", "1025x2049", "Input HxW of the model.")
flags.DEFINE_string("target_runtime", "tflite_xnnpack", "A TFLite runtime (deploy.runtimes).")
flags.DEFINE_string("target_quantization", "int8", "fp32, fp16, dynamic or int8.")
flags.DEFINE_integer("target_threads", 2, "Threads of the runtime.")
flags.DEFINE_float("keep", 0.5, "The uniform keep whose estimate is checked.")
flags.DEFINE_float("min_keep", 0.25, "The table's narrowest keep.")
flags.DEFINE_integer("round_to", 8, "Width multiple of the table's grid and the plan.")
flags.DEFINE_string("output_dir", "reports/budget", "Where the table and the result go.")
FLAGS = flags.FLAGS


def _main() -> None:
    check_keep(FLAGS.keep)
    size = parse_size(FLAGS.input_size, "input_size", MIN_INPUT_SIZE)
    target = Target(FLAGS.target_runtime, FLAGS.target_quantization, FLAGS.target_threads, size)
    config, source = plan_from_flags()
    config = config.replace(batch_norm=False)
    weights = initial_weights(config)
    path = os.path.join(FLAGS.output_dir, os.path.basename(default_table_path(source, target)))
    table = LatencyTable(path, target, config, FLAGS.min_keep, FLAGS.round_to)
    begin = time.time()
    table.measure_missing()
    table_s = time.time() - begin
    groups = model_groups(config)
    narrowest = config.replace(plan=narrowest_plan(config.plan, groups, FLAGS.min_keep,
                                                   FLAGS.round_to))
    anchors = {}
    for name, model, model_weights in (("source", config, weights),
                                       ("narrowest", narrowest, initial_weights(narrowest))):
        measured_s = table.model_seconds(model, model_weights)
        table.calibrate(model.plan, measured_s)
        anchors[name] = {"conv_sum_ms": 1e3 * table.conv_seconds(model.plan),
                         "measured_ms": 1e3 * measured_s}
    plan = prune_plan(config.plan, groups, FLAGS.keep, FLAGS.round_to)
    estimate = table.estimate(plan)
    measured = measure_model(*prune(config, weights, plan), target)
    result = {"source": source, "target": target.describe(), "settings": table.settings,
              "table": table.path, "table_entries": len(table.convs),
              "table_seconds_this_run": round(table_s, 1), "anchors": anchors,
              "min_keep": FLAGS.min_keep, "keep": FLAGS.keep, "round_to": FLAGS.round_to,
              "conv_sum_ms": 1e3 * table.conv_seconds(plan), "estimate_ms": 1e3 * estimate,
              "measured_ms": 1e3 * measured, "error": estimate / measured - 1}
    atomic_write_bytes(os.path.join(FLAGS.output_dir, "latency_check.json"),
                       json.dumps(result, indent=1).encode())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
