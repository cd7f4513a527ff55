"""Every distinct convolution of a channel plan, timed alone in TensorFlow and in LiteRT
(XNNPACK): the work of benchmarks.conv_latency.

It explains a whole-model latency gap between the SavedModel in TensorFlow (oneDNN kernels) and
the fp32 TFLite model under XNNPACK: each convolution of the BN-merged model is built alone at
the shape it has in the model (same input size, width, kernel, stride, dilation; random
weights), converted to fp32 TFLite, and timed in both runtimes with the same thread count. Rows
are sorted by how much longer LiteRT takes, times how often the convolution occurs. A
convolution alone runs with its weights hot in cache and without its neighbours, so the totals
only approximate the whole model's conv time.

XNNPACK's throughput drops on the widest kernels, mostly those larger than the core's L2 cache;
`split_mib` also times each larger convolution as output-channel groups within the budget, in
both runtimes, to show what such a split would gain or cost.
"""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging
from ai_edge_litert.interpreter import Interpreter

from deploy.timing import measure
from icnet.config import ICNetConfig
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


def time_conv(spec: dict, threads: int, warmup: int, runs: int, groups: int = 1) -> dict:
    """Median seconds of one convolution in TensorFlow and in LiteRT (XNNPACK); its GFLOPs and
    fp32 kernel size in MiB. With `groups` > 1 the convolution runs as that many convolutions
    over the same input, each computing a slice of the output channels, concatenated."""
    images = tf_keras.Input(spec["input"], batch_size=1)
    widths = [spec["filters"] // groups + (i < spec["filters"] % groups) for i in range(groups)]
    outputs = [tf_keras.layers.Conv2D(width, spec["kernel"], strides=spec["stride"],
                                      dilation_rate=spec["dilation"],
                                      padding=spec["padding"])(images) for width in widths]
    model = tf_keras.Model(images, outputs[0] if groups == 1
                           else tf_keras.layers.Concatenate()(outputs))
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
    weights = spec["filters"] * spec["input"][2] * spec["kernel"] ** 2
    return {"tf_s": tf_s, "tflite_s": tflite_s, "gflops": 2 * height * width * weights / 1e9,
            "weights_mib": 4 * weights / 2**20}


def output_groups(weights_mib: float, filters: int, budget_mib: float) -> int:
    """Fewest output-channel groups that bring each group's fp32 kernel within `budget_mib`
    (groups differ by at most one channel; one channel per group if even that is too wide)."""
    # Multiplying first, plus a tolerance, keeps e.g. 0.3 * 10 / 1.0 at 3 (not 2.999...).
    channels_per_group = max(1, math.floor(budget_mib * filters / weights_mib + 1e-9))
    return math.ceil(filters / channels_per_group)


def measure_plan(config: ICNetConfig, input_size: tuple[int, int], threads: int,
                 warmup: int = 2, runs: int = 5, split_mib: float | None = None) -> dict:
    """Times every distinct convolution (see the module docstring).

    With `split_mib`, a convolution whose fp32 kernel exceeds it is also timed split into
    output-channel groups (see output_groups), as row["split"] = {"groups", "tf_s", "tflite_s"}.

    Returns:
      {"rows": [...], "totals": {"tf_s", "tflite_s", "gflops"}}; each row is a conv_shapes
      entry with its timings, totals weigh every row by its count.
    """
    rows = []
    shapes = conv_shapes(config, input_size)
    for index, spec in enumerate(shapes, 1):
        row = {**spec, **time_conv(spec, threads, warmup, runs)}
        logging.info("conv %d/%d %s: TF %.1f ms, LiteRT %.1f ms", index, len(shapes),
                     spec["layers"][0], row["tf_s"] * 1e3, row["tflite_s"] * 1e3)
        if split_mib and row["weights_mib"] > split_mib:
            groups = output_groups(row["weights_mib"], spec["filters"], split_mib)
            split = time_conv(spec, threads, warmup, runs, groups)
            row["split"] = {"groups": groups, "tf_s": split["tf_s"],
                            "tflite_s": split["tflite_s"]}
            logging.info("  split in %d output groups: TF %.1f ms, LiteRT %.1f ms", groups,
                         split["tf_s"] * 1e3, split["tflite_s"] * 1e3)
        rows.append(row)
    rows.sort(key=lambda r: (r["tf_s"] - r["tflite_s"]) * r["count"])
    totals = {key: sum(r[key] * r["count"] for r in rows) for key in ("tf_s", "tflite_s",
                                                                       "gflops")}
    return {"rows": rows, "totals": totals}


def table(result: dict) -> str:
    """The rows as a Markdown table: shape, fp32 weights MiB, milliseconds per runtime, ratio."""
    lines = ["| layers | input | filters | kernel | stride | dilation | count | weights MiB | "
             "GFLOPs | TF ms | LiteRT ms | LiteRT / TF |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"] + [{"layers": ["total (weighted by count)"], **result["totals"]}]:
        names = ", ".join(r["layers"][:3]) + (" ..." if len(r["layers"]) > 3 else "")
        shape = "x".join(str(n) for n in r["input"]) if "input" in r else ""
        cells = [names, shape] + [str(r.get(k, "")) for k in ("filters", "kernel", "stride",
                                                             "dilation", "count")]
        cells += [f"{r['weights_mib']:.2f}" if "weights_mib" in r else ""]
        cells += [f"{r['gflops']:.2f}", f"{r['tf_s'] * 1e3:.1f}", f"{r['tflite_s'] * 1e3:.1f}",
                  f"{r['tflite_s'] / r['tf_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    split_rows = [r for r in result["rows"] if "split" in r]
    if split_rows:
        lines += ["", "| layers | weights MiB | groups | TF ms whole | TF ms split | "
                  "LiteRT ms whole | LiteRT ms split |", "|---|---|---|---|---|---|---|"]
        for r in split_rows:
            split = r["split"]
            cells = [", ".join(r["layers"][:3]) + (" ..." if len(r["layers"]) > 3 else ""),
                     f"{r['weights_mib']:.2f}", str(split["groups"])]
            cells += [f"{seconds * 1e3:.1f}" for seconds in (r["tf_s"], split["tf_s"],
                                                             r["tflite_s"], split["tflite_s"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
