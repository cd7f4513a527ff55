"""A channel plan's latency on one TFLite runtime, estimated from a table of single
convolutions (NetAdapt's lookup table) and checked against the whole model.

Every convolution of the BN-merged model is timed alone on the target (runtime, quantization,
threads, input size) at a grid of its input and output widths (`grid_widths`), int8 in and
out and without reading its output back, as inside the model; a plan's estimate is the sum of
its convolutions' times, bilinear between grid widths, mapped through whole-model
measurements (`calibrate`: the source's, the narrowest plan's and each searched plan's),
linear between them: the resizes, sums, pooling and input conversion the table leaves out
are partly a fixed cost (at 1025x2049, a plan with every group at a quarter width runs in
about 50 ms of which its convolutions are 34), so the estimate is anchored to measurements.
`measure_model` times the real model the way the export's artifact is timed: written in the
target quantization and run through the target's `deploy.runtimes` session.

The table is a JSON file beside the source model, reused while its settings match (machine,
runtime, quantization, threads, input size, LiteRT and TensorFlow versions) and refused with
the differing setting named when they do not. Entries are written as they are measured, so an
interrupted measurement resumes where it stopped; the source model's measurement is kept in
the table too (every searched plan is measured afresh).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from deploy import runtimes, tflite_writer
from deploy.pruning import conv_sites, kept_width, model_groups
from deploy.quantize import configure_converter, quantization_spec
from deploy.timing import measure, seeded_image
from deploy.timing_worker import time_artifact
from icnet import cpu
from icnet.config import ICNetConfig
from icnet.exits import OptionError
from icnet.fileio import atomic_write_bytes
from icnet.inference import build_inference_model
from icnet.weights import WeightDict

# Keep fractions of a group's source width that the table is measured at (plus `min_keep`).
GRID_FRACTIONS = (1.0, 0.75, 0.5, 0.25)
# Quantizations a table can be measured in (a QAT model runs the int8 kernels: use int8).
TABLE_QUANTIZATIONS = ("fp32", "fp16", "dynamic", "int8")
# Settings that make a table another machine's or another model size's.
IDENTITY = ("method", "runtime", "quantization", "threads", "input_size", "cpu", "cpu_flags",
            "litert", "tensorflow")
# How a convolution is timed (a table timed another way is refused). Method 3: int8 in and
# out; method 2's uint8 boundary requantized every input and output, which made the
# high-resolution convolutions look 3-4x slower than inside the model.
METHOD = 3


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the latency is measured: a TFLite runtime of deploy.runtimes, the artifact's
    quantization, threads and the model's input size (H, W)."""

    runtime: str = "tflite_xnnpack"
    quantization: str = "int8"
    threads: int = 2
    input_size: tuple[int, int] = (1025, 2049)

    def check(self) -> runtimes.Runtime:
        """The runtime, or OptionError naming the unknown, unavailable or untimed value."""
        try:
            runtime = runtimes.get(self.runtime)
        except ValueError as e:
            raise OptionError("target_runtime", str(e)) from None
        reason = runtime.available()
        if reason is not None:
            raise OptionError("target_runtime", f"{self.runtime} is not available on this "
                                                f"machine: {reason}")
        if runtime.format != "tflite":
            tflite = ", ".join(r.name for r in runtimes.for_format("tflite"))
            raise OptionError("target_runtime", f"{self.runtime} runs {runtime.format} files; "
                                                f"latency tables are measured on the TFLite "
                                                f"runtimes ({tflite})")
        if self.quantization not in TABLE_QUANTIZATIONS:
            raise OptionError("target_quantization", f"{self.quantization!r}: choose from "
                                                     f"{', '.join(TABLE_QUANTIZATIONS)}")
        if self.threads < 1:
            raise OptionError("threads", f"must be >= 1, got {self.threads}")
        return runtime

    def settings(self) -> dict:
        """The table's identity on this machine (see IDENTITY)."""
        from ai_edge_litert import __version__ as litert_version

        model, flags = cpu.cpuinfo()
        return {"method": METHOD, "runtime": self.runtime, "quantization": self.quantization,
                "threads": self.threads, "input_size": list(self.input_size),
                "cpu": model or "unknown",
                "cpu_flags": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
                "litert": litert_version, "tensorflow": tf.__version__}

    def describe(self) -> str:
        height, width = self.input_size
        return (f"{self.runtime} {self.quantization}, {self.threads} threads, "
                f"{height}x{width}")


def default_table_path(source: str, target: Target) -> str:
    """`<model dir>/latency/<runtime>_<quantization>_<threads>t_<H>x<W>.json` (beside a
    `.npy` source: `<file>.latency/...`)."""
    folder = (f"{source}.latency" if source.endswith(".npy")
              else os.path.join(source if os.path.isdir(source) else os.path.dirname(source),
                                "latency"))
    height, width = target.input_size
    return os.path.join(folder, f"{target.runtime}_{target.quantization}_{target.threads}t_"
                                f"{height}x{width}.json")


def grid_widths(channels: int, min_keep: float, round_to: int) -> list[int]:
    """The widths a group of `channels` is timed at: GRID_FRACTIONS from 1 down to `min_keep`
    and `min_keep` itself, as `kept_width` rounds them, ascending."""
    fractions = [f for f in GRID_FRACTIONS if f >= min_keep] + [min_keep]
    return sorted({kept_width(channels, f, round_to) for f in fractions})


def _bracket(grid: Sequence[int], width: int) -> tuple[int, int, float]:
    """(lower, upper, weight of upper) of `width` between neighbouring grid widths."""
    if width <= grid[0]:
        return grid[0], grid[0], 0.0
    if width >= grid[-1]:
        return grid[-1], grid[-1], 0.0
    upper = bisect.bisect_left(grid, width)
    low, high = grid[upper - 1], grid[upper]
    return low, high, (width - low) / (high - low)


def _conv_model(spec: Mapping, inputs: int, filters: int) -> tf_keras.Model:
    images = tf_keras.Input([*spec["input_hw"], inputs], batch_size=1)
    output = tf_keras.layers.Conv2D(filters, spec["kernel"], strides=spec["stride"],
                                    dilation_rate=spec["dilation"],
                                    padding=spec["padding"])(images)
    return tf_keras.Model(images, output)


def time_conv(spec: Mapping, inputs: int, filters: int, target: Target, runtime,
              warmup: int, runs: int) -> float:
    """Median seconds of one convolution (random weights) written as a TFLite file in the
    target quantization and run under the target runtime."""
    model = _conv_model(spec, inputs, filters)
    rng = np.random.default_rng(0)
    shape = (1, *spec["input_hw"], inputs)

    def calibration():
        for _ in range(2):
            yield [rng.random(shape, dtype=np.float32)]

    function = tf.function(model, input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], model)
    converter.experimental_lower_to_saved_model = False  # as tflite_writer: 10-20x faster
    spec = quantization_spec(target.quantization)
    configure_converter(converter, spec, calibration)
    if spec.integer_only:  # int8 in and out, as inside the model: no boundary conversions
        converter.inference_input_type = converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # int8: the input range comes from the calibration
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        content = converter.convert()
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "conv.tflite")
        with open(path, "wb") as f:
            f.write(content)
        session = runtime.open(path, target.threads)
        dtype = np.dtype(session.input_dtype)
        feed = (rng.integers(0, 256, shape).astype(dtype) if dtype.kind in "iu"
                else rng.random(shape, dtype=np.float32))
        # The convolution's compute alone: reading a high-resolution output back (and
        # dequantizing it) is work the model does not do between its layers.
        return statistics.median(measure(session.compute, feed, warmup, runs))


def measure_model(config: ICNetConfig, weights: WeightDict, target: Target,
                  warmup: int = 2, runs: int = 5) -> float:
    """Median seconds of the whole model on the target: converted as deploy.export converts
    it (logits; int8 calibrated on two seeded random images: timing only) and run through the
    target runtime's session on one seeded image."""
    target.check()
    model = build_inference_model(config, weights, target.input_size)
    calibration = [seeded_image(target.input_size, seed)[0] for seed in (1, 2)]
    content = tflite_writer.convert(model, target.input_size, target.quantization,
                                    calibration if target.quantization == "int8" else None)
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "model.tflite")
        tflite_writer.write(content, path)
        return time_tflite(path, target, warmup, runs)


def time_tflite(path: str, target: Target, warmup: int = 2, runs: int = 5) -> float:
    """Median seconds of a .tflite file on the target runtime and threads, on one seeded
    image of the target's input size, in a fresh worker process (deploy.timing_worker: the
    model timed in this process, after the TensorFlow work of a search or a fine-tune, ran up
    to 1.7x slower).

    Raises:
      RuntimeError: the worker's timing failed (its error).
    """
    target.check()
    result = time_artifact(path, target.runtime, target.threads, warmup, runs)
    if result.get("status") != "ok":
        raise RuntimeError(f"timing {path} on {target.describe()} failed: "
                           f"{result.get('error') or result.get('reason')}")
    return result["median_s"]


class LatencyTable:
    """The convolution times of one model family on one target (see the module docstring).

    Args:
      path: the table's JSON file (created when missing).
      target: where it is measured.
      config: the source model (its plan gives every group's full width).
      min_keep, round_to: the narrowest width and width multiple the search may choose.

    Raises:
      OptionError: a bad target, or a table at `path` measured elsewhere (naming the setting).
    """

    def __init__(self, path: str, target: Target, config: ICNetConfig, min_keep: float,
                 round_to: int):
        self.path, self.target = path, target
        self.runtime = target.check()
        self.sites = conv_sites(config, target.input_size)
        self.grids = {g.producers[0]: grid_widths(g.channels, min_keep, round_to)
                      for g in model_groups(config)}
        self.settings = target.settings()
        self.convs: dict[str, float] = {}
        self.models: dict[str, float] = {}  # plan digest -> measured seconds of the model
        # Plan digest -> (the table's sum, the measured seconds) of each anchoring model.
        self.anchors: dict[str, tuple[float, float]] = {}
        if os.path.isfile(path):
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path) as f:
                data = json.load(f)
            settings, convs = data["settings"], data["convs"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise OptionError("latency_table", f"{self.path}: not a latency table "
                                               f"({type(e).__name__}: {e})") from None
        for key in IDENTITY:
            if settings.get(key) != self.settings[key]:
                raise OptionError("latency_table", (
                    f"{self.path} was measured with {key} {settings.get(key)!r}, not "
                    f"{self.settings[key]!r} (another machine or size): delete it or pass "
                    f"another --latency_table"))
        self.convs = {str(k): float(v) for k, v in convs.items()}
        self.models = {str(k): float(v) for k, v in data.get("models", {}).items()}

    def _save(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(
            {"settings": self.settings, "convs": self.convs, "models": self.models},
            indent=0).encode())

    def _widths(self, source: str | int) -> list[int]:
        return self.grids[source] if isinstance(source, str) else [source]

    @staticmethod
    def _key(spec: Mapping, inputs: int, filters: int) -> str:
        return (f"{spec['input_hw'][0]}x{spec['input_hw'][1]} k{spec['kernel']} "
                f"s{spec['stride']} d{spec['dilation']} {spec['padding']} "
                f"{inputs}->{filters}")

    def missing(self) -> list[tuple[Mapping, int, int]]:
        """The (spec, inputs, filters) of every grid entry not measured yet, deduplicated."""
        todo = {}
        for site in self.sites:
            for inputs in self._widths(site.inputs):
                for filters in self._widths(site.outputs):
                    key = self._key(site.spec, inputs, filters)
                    if key not in self.convs:
                        todo[key] = (site.spec, inputs, filters)
        return list(todo.values())

    def measure_missing(self, warmup: int = 2, runs: int = 5) -> None:
        """Times every missing entry, saving the table after each."""
        todo = self.missing()
        if not todo:
            return
        logging.info("latency table %s: timing %d convolutions on %s", self.path, len(todo),
                     self.target.describe())
        begin = time.time()
        for number, (spec, inputs, filters) in enumerate(todo, 1):
            seconds = time_conv(spec, inputs, filters, self.target, self.runtime, warmup, runs)
            self.convs[self._key(spec, inputs, filters)] = seconds
            self._save()
            if number % 20 == 0 or number == len(todo):
                elapsed = time.time() - begin
                logging.info("latency table: %d/%d convolutions timed, ETA %.0f s", number,
                             len(todo), elapsed / number * (len(todo) - number))

    def _entry(self, spec: Mapping, inputs: int, filters: int) -> float:
        return self.convs[self._key(spec, inputs, filters)]

    def conv_seconds(self, plan: Mapping[str, int]) -> float:
        """The table's sum of the plan's convolutions (bilinear between grid widths)."""
        total = 0.0
        for site in self.sites:
            width_in = plan[site.inputs] if isinstance(site.inputs, str) else site.inputs
            width_out = plan[site.outputs] if isinstance(site.outputs, str) else site.outputs
            in_low, in_high, a = _bracket(self._widths(site.inputs), width_in)
            out_low, out_high, b = _bracket(self._widths(site.outputs), width_out)
            total += ((1 - a) * (1 - b) * self._entry(site.spec, in_low, out_low)
                      + a * (1 - b) * self._entry(site.spec, in_high, out_low)
                      + (1 - a) * b * self._entry(site.spec, in_low, out_high)
                      + a * b * self._entry(site.spec, in_high, out_high))
        return total

    @staticmethod
    def plan_digest(plan: Mapping[str, int]) -> str:
        return hashlib.sha256(json.dumps(dict(sorted(plan.items()))).encode()).hexdigest()[:16]

    def model_seconds(self, config: ICNetConfig, weights: WeightDict) -> float:
        """The whole model (the source, or one pruned to a plan) measured on the target
        (`measure_model`), kept in the table by its plan."""
        digest = self.plan_digest(config.plan)
        if digest not in self.models:
            self.models[digest] = measure_model(config, weights, self.target)
            self._save()
        return self.models[digest]

    def calibrate(self, plan: Mapping[str, int], measured_s: float) -> None:
        """Anchors estimates to a measurement of the whole model with `plan` (kept with the
        earlier anchors; a plan measured again replaces its anchor)."""
        self.anchors[self.plan_digest(plan)] = (self.conv_seconds(plan), measured_s)

    def estimate(self, plan: Mapping[str, int]) -> float:
        """Estimated seconds of the whole model with `plan`: the table's sum mapped through
        the anchors, linearly between the two whose sums bracket it (the nearest two beyond
        them), so that the part of the model that does not shrink with the widths (the input's
        conversion, full-resolution resizes) is a fixed cost, not a share; proportionally to
        the nearest anchor with one anchor, or where the measurements fall as the sums rise
        (timing noise)."""
        total = self.conv_seconds(plan)
        points = sorted(self.anchors.values())
        if not points:
            return total
        if len(points) > 1:
            upper = min(max(bisect.bisect_left([x for x, _ in points], total), 1),
                        len(points) - 1)
            (x0, y0), (x1, y1) = points[upper - 1], points[upper]
            if x1 > x0 and y1 > y0:
                return y0 + (total - x0) * (y1 - y0) / (x1 - x0)
        x, y = min(points, key=lambda p: abs(p[0] - total))
        return total * y / x
