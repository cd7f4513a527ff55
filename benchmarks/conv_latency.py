"""Every distinct convolution of a channel plan, timed alone in TensorFlow and in LiteRT (XNNPACK).

Examples:
  python -m benchmarks.conv_latency --filter_scale 2 --input_size 1025x2049 --threads 2
  python -m benchmarks.conv_latency --model_dir runs/demo/export/pruned_model --json convs.json

It explains a whole-model latency gap between the SavedModel in TensorFlow (oneDNN kernels) and
the fp32 TFLite model under XNNPACK: each convolution of the BN-merged model is built alone at
the shape it has in the model (same input size, width, kernel, stride, dilation; random
weights), converted to fp32 TFLite, and timed in both runtimes with the same thread count. Rows
are sorted by how much longer LiteRT takes, times how often the convolution occurs. A
convolution alone runs with its weights hot in cache and without its neighbours, so the totals
only approximate the whole model's conv time.
"""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np
import tensorflow as tf
import tf_keras
from absl import app, flags, logging
from ai_edge_litert.interpreter import Interpreter

from benchmarks.runtimes import measure
from icnet.checkpoint import select_plan
from icnet.cli import parse_size
from icnet.config import ICNetConfig
from icnet.fileio import atomic_write_bytes
from icnet.model import build_icnet


def conv_shapes(config: ICNetConfig, input_size: tuple[int, int]) -> list[dict]:
    """The distinct convolutions of the BN-merged model, in graph order, with their counts."""
    model = build_icnet(config.replace(batch_norm=False), input_size)
    shapes: dict[str, dict] = {}
    for layer in model.layers:
        if not isinstance(layer, tf_keras.layers.Conv2D):
            continue
        spec = {"input": [int(n) for n in layer.input.shape[1:]], "filters": layer.filters,
                "kernel": layer.kernel_size[0], "stride": layer.strides[0],
                "dilation": layer.dilation_rate[0], "padding": layer.padding}
        key = json.dumps(spec, sort_keys=True)
        if key in shapes:
            shapes[key]["count"] += 1
            shapes[key]["layers"].append(layer.name)
        else:
            shapes[key] = {**spec, "count": 1, "layers": [layer.name]}
    return list(shapes.values())


def time_conv(spec: dict, threads: int, warmup: int, runs: int) -> dict:
    """Median seconds of one convolution in TensorFlow and in LiteRT (XNNPACK); its GFLOPs."""
    images = tf_keras.Input(spec["input"], batch_size=1)
    conv = tf_keras.layers.Conv2D(spec["filters"], spec["kernel"], strides=spec["stride"],
                                  dilation_rate=spec["dilation"], padding=spec["padding"])
    model = tf_keras.Model(images, conv(images))
    feed = np.random.default_rng(0).random((1, *spec["input"]), dtype=np.float32)
    # Fetching one element forces the whole convolution without timing a copy of its output.
    first_element = tf.function(lambda x: model(x, training=False)[:, :1, :1, :1])
    tensor = tf.constant(feed)
    tf_s = statistics.median(measure(lambda x: first_element(x).numpy(), tensor, warmup, runs))
    interpreter = Interpreter(
        model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert(),
        num_threads=threads)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feed)
    tflite_s = statistics.median(measure(lambda _: interpreter.invoke(), None, warmup, runs))
    height, width = model.output_shape[1:3]
    gflops = 2 * height * width * spec["filters"] * spec["input"][2] * spec["kernel"] ** 2 / 1e9
    return {"tf_s": tf_s, "tflite_s": tflite_s, "gflops": gflops}


def measure_plan(config: ICNetConfig, input_size: tuple[int, int], threads: int,
                 warmup: int = 2, runs: int = 5) -> dict:
    """Times every distinct convolution (see the module docstring).

    Returns:
      {"rows": [...], "totals": {"tf_s", "tflite_s", "gflops"}}; each row is a conv_shapes
      entry with its timings, totals weigh every row by its count.
    """
    rows = []
    shapes = conv_shapes(config, input_size)
    for index, spec in enumerate(shapes, 1):
        row = {**spec, **time_conv(spec, threads, warmup, runs)}
        rows.append(row)
        logging.info("conv %d/%d %s: TF %.1f ms, LiteRT %.1f ms", index, len(shapes),
                     spec["layers"][0], row["tf_s"] * 1e3, row["tflite_s"] * 1e3)
    rows.sort(key=lambda r: (r["tf_s"] - r["tflite_s"]) * r["count"])
    totals = {key: sum(r[key] * r["count"] for r in rows) for key in ("tf_s", "tflite_s",
                                                                       "gflops")}
    return {"rows": rows, "totals": totals}


def table(result: dict) -> str:
    """The rows as a Markdown table, milliseconds and GFLOP/s per runtime."""
    lines = ["| layers | input | filters | kernel | stride | dilation | count | GFLOPs | "
             "TF ms | LiteRT ms | LiteRT / TF |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"] + [{"layers": ["total (weighted by count)"], **result["totals"]}]:
        names = ", ".join(r["layers"][:3]) + (" ..." if len(r["layers"]) > 3 else "")
        shape = "x".join(str(n) for n in r["input"]) if "input" in r else ""
        cells = [names, shape] + [str(r.get(k, "")) for k in ("filters", "kernel", "stride",
                                                             "dilation", "count")]
        cells += [f"{r['gflops']:.2f}", f"{r['tf_s'] * 1e3:.1f}", f"{r['tflite_s'] * 1e3:.1f}",
                  f"{r['tflite_s'] / r['tf_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


flags.DEFINE_float("filter_scale", 2.0, "Reference plan width: 1 (half) or 2 (full).")
flags.DEFINE_string("model_dir", None, "Model directory with plan.json (e.g. a pruned model).")
flags.DEFINE_string("plan", None, "A plan.json file.")
flags.DEFINE_integer("num_classes", 19, "Classifier width (ignored with --model_dir/--plan).")
flags.DEFINE_string("input_size", "1025x2049", "Input HxW of the model.")
flags.DEFINE_integer("threads", 2, "Threads of both runtimes.")
flags.DEFINE_integer("warmup", 2, "Untimed calls per convolution and runtime.")
flags.DEFINE_integer("runs", 5, "Timed calls per convolution and runtime.")
flags.DEFINE_string("json", None, "Also write the rows and totals to this JSON file.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        size = parse_size(FLAGS.input_size, "input_size")
        if FLAGS.threads < 1 or FLAGS.runs < 1 or FLAGS.warmup < 0:
            raise ValueError(f"--threads and --runs must be >= 1 and --warmup >= 0, got "
                             f"{FLAGS.threads}, {FLAGS.runs}, {FLAGS.warmup}")
        config = select_plan(FLAGS.model_dir, FLAGS.plan, FLAGS.filter_scale,
                             FLAGS.num_classes)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    # Before TensorFlow runs anything: its thread pools are fixed at the first op.
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.set_visible_devices([], "GPU")
    result = measure_plan(config, size, FLAGS.threads, FLAGS.warmup, FLAGS.runs)
    source = FLAGS.model_dir or FLAGS.plan or f"filter_scale={FLAGS.filter_scale:g}"
    result["settings"] = {"input_size": list(size), "threads": FLAGS.threads,
                          "warmup": FLAGS.warmup, "runs": FLAGS.runs, "source": source}
    if FLAGS.json:
        atomic_write_bytes(FLAGS.json, json.dumps(result, indent=1).encode())
    print(table(result))


if __name__ == "__main__":
    app.run(main)
