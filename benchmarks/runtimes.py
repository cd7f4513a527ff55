"""The runtimes a benchmark case can use, one small runner per runtime, and one timing loop.

A runner has a `name`, an `input_size` (H, W), `prepare(image)` (uint8 [1, H, W, 3] -> the
runtime's input, done once outside the timing) and `__call__(feed)` (one inference, every
output fetched to host memory). `open_runner(path, runtime, threads)` picks it;
`run_case(path, runtime, threads, warmup, runs)` opens, warms up and times one (artifact,
runtime, threads) case.

Runners import their runtime lazily and nothing else: a TFLite or ONNX Runtime case never
imports TensorFlow, so its peak memory is its own. Each case runs in its own process
(`benchmarks.worker`, started by `benchmarks.latency`).

What is timed is the same network on every runtime: one uint8 image -> `logits` (1/4
resolution) in host memory. The full-resolution upsample and argmax that the SavedModel and
ONNX graphs also offer as `class_ids` are left out (a SavedModel call fetching only `logits`
is pruned by TensorFlow, as TF Serving's output filter does; the ONNX graph is cut down to
its `logits` output before ONNX Runtime loads it, since ONNX Runtime would run every node),
as the TFLite models do not have them.
  - SavedModel (`tf_*`): `serving_default` inside a tf.function that returns `logits`.
  - TFLite (`tflite_*`): set input, invoke, read `logits` (the input is already converted to
    the flatbuffer's dtype: float32 pixels for float models, uint8 for int8/qat).
  - ONNX (`onnxruntime_*`): `session.run(["logits"], ...)` on the graph cut to `logits`.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import time

import numpy as np

from deploy.sessions import open_interpreter, open_onnx_session, pixels_as_input

SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class Runtime:
    """One way of running an artifact.

    Attributes:
      name: the fixed name used in flags and results.
      format: the artifact format it runs ("saved_model", "tflite" or "onnx").
      family: the `--runtimes` family that includes it ("tf", "tflite", "onnx").
      gpu: measured once per artifact (no thread count) instead of per thread count.
      description: one line for reports.
    """

    name: str
    format: str
    family: str
    gpu: bool
    description: str


RUNTIMES = {r.name: r for r in (
    Runtime("tf_cpu", "saved_model", "tf", False,
            "TensorFlow SavedModel on CPU (intra-op threads = threads, inter-op 1)"),
    Runtime("tf_xla_cpu", "saved_model", "tf", False,
            "TensorFlow SavedModel on CPU, signature wrapped in tf.function(jit_compile=True)"),
    Runtime("tf_gpu", "saved_model", "tf", True, "TensorFlow SavedModel on the first GPU"),
    Runtime("tflite_xnnpack", "tflite", "tflite", False,
            "LiteRT Interpreter with the default (XNNPACK) delegate"),
    Runtime("tflite_reference", "tflite", "tflite", False,
            "LiteRT Interpreter, builtin kernels without default delegates"),
    Runtime("tflite_gpu", "tflite", "tflite", True,
            "LiteRT CompiledModel with HardwareAccelerator.GPU"),
    Runtime("onnxruntime_cpu", "onnx", "onnx", False,
            "ONNX Runtime CPUExecutionProvider (intra-op threads = threads, inter-op 1)"),
    Runtime("onnxruntime_cuda", "onnx", "onnx", True,
            "ONNX Runtime CUDAExecutionProvider"),
)}
FAMILIES = ("tf", "tflite", "onnx")
# What a family expands to (tf_xla_cpu only when asked for: --xla or by name).
FAMILY_DEFAULTS = {
    "tf": ("tf_cpu", "tf_gpu"),
    "tflite": ("tflite_xnnpack", "tflite_reference", "tflite_gpu"),
    "onnx": ("onnxruntime_cpu", "onnxruntime_cuda"),
}


class Unavailable(Exception):
    """The runtime cannot run here (not an error of the artifact).

    Args:
      reason: why, for the results.
      machine_wide: true when the reason holds for every artifact on this machine (no GPU),
        so the caller need not ask again for the next artifact.
    """

    def __init__(self, reason: str, machine_wide: bool = False):
        super().__init__(reason)
        self.reason, self.machine_wide = reason, machine_wide


_LOCATION_ONLY = re.compile(r"(└\s*)?ERROR: \[[^\]]*\]")


def _error_text(error: BaseException) -> str:
    """`Type: message` on one line; LiteRT's bare source locations are dropped."""
    text = " ".join(str(error).split())
    if text and not _LOCATION_ONLY.sub("", text).strip():
        return f"{type(error).__name__} (no message beyond source locations: {text})"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class TensorFlowRunner:
    """A SavedModel's `serving_default` signature under TensorFlow."""

    def __init__(self, path: str, runtime: str, threads: int | None):
        import tensorflow as tf

        self._tf = tf
        if runtime == "tf_gpu":
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                raise Unavailable("no GPU visible to TensorFlow "
                                  "(tf.config.list_physical_devices('GPU') is empty)",
                                  machine_wide=True)
            self.device = "/GPU:0"
        else:
            tf.config.set_visible_devices([], "GPU")
            if threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            self.device = "/CPU:0"
        loaded = tf.saved_model.load(path)
        if SIGNATURE not in loaded.signatures:
            raise ValueError(f"{path}: no signature {SIGNATURE!r} (has "
                             f"{sorted(loaded.signatures)})")
        self._loaded = loaded  # keeps the signature's variables alive
        function = loaded.signatures[SIGNATURE]
        spec = function.structured_input_signature[1]["images"]
        self.input_size = (int(spec.shape[1]), int(spec.shape[2]))
        self.input_dtype = spec.dtype.name
        self._function = tf.function(lambda images: function(images=images)["logits"],
                                     jit_compile=runtime == "tf_xla_cpu")
        self.name = runtime

    def prepare(self, image: np.ndarray):
        with self._tf.device("/CPU:0"):
            return self._tf.constant(image, self._tf.uint8)

    def __call__(self, feed) -> np.ndarray:
        with self._tf.device(self.device):
            return self._function(feed).numpy()


class InterpreterRunner:
    """A `.tflite` file under the LiteRT Interpreter (XNNPACK or reference kernels)."""

    def __init__(self, path: str, runtime: str, threads: int | None):
        self._interpreter = open_interpreter(path, threads, xnnpack=runtime == "tflite_xnnpack")
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self.input_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        self.input_dtype = np.dtype(self._input["dtype"]).name
        self.name = runtime

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return pixels_as_input(image, self._input["dtype"], self._input["quantization"])

    def __call__(self, feed: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input["index"], feed)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)


class CompiledModelRunner:
    """A `.tflite` file under LiteRT's CompiledModel API on the GPU accelerator.

    Raises:
      Unavailable: no GPU model can be created while the file loads on the CPU accelerator
        (so the file is fine and the GPU path is what is missing).
    """

    def __init__(self, path: str, runtime: str, threads: int | None):
        del threads  # the GPU accelerator has no thread setting
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.interpreter import Interpreter

        # The Interpreter verifies the flatbuffer; CompiledModel crashes on a corrupt one.
        Interpreter(model_path=path)
        try:
            self._model = CompiledModel.from_file(path,
                                                  hardware_accel=HardwareAccelerator.GPU)
        except Exception as gpu_error:  # noqa: BLE001 - LiteRT raises RuntimeError and more
            try:
                CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.CPU)
            except Exception as cpu_error:  # noqa: BLE001
                raise RuntimeError(f"LiteRT cannot load the model: {_error_text(cpu_error)}") \
                    from cpu_error
            raise Unavailable("LiteRT CompiledModel could not create a GPU "
                              f"(HardwareAccelerator.GPU) model: {_error_text(gpu_error)}") \
                from gpu_error
        self.fully_accelerated = bool(self._model.is_fully_accelerated())
        signature = next(iter(self._model.get_signature_list()))
        inputs = list(self._model.get_input_tensor_details(signature).values())
        outputs = list(self._model.get_output_tensor_details(signature).values())
        self._input_dtype = np.dtype(inputs[0]["dtype"])
        self._output_specs = [(np.dtype(o["dtype"]), int(np.prod(o["shape"]))) for o in outputs]
        self._inputs = self._model.create_input_buffers(0)
        self._outputs = self._model.create_output_buffers(0)
        self.input_size = (int(inputs[0]["shape"][1]), int(inputs[0]["shape"][2]))
        self.input_dtype = self._input_dtype.name
        self.name = runtime

    def prepare(self, image: np.ndarray) -> np.ndarray:
        # CompiledModel exposes no input quantization; integer models here take raw pixels.
        return image.astype(self._input_dtype)

    def __call__(self, feed: np.ndarray) -> list[np.ndarray]:
        self._inputs[0].write(feed)
        self._model.run_by_index(0, self._inputs, self._outputs)
        return [buffer.read(size, dtype)
                for buffer, (dtype, size) in zip(self._outputs, self._output_specs)]


def logits_only_onnx(path: str) -> bytes:
    """The ONNX model at `path` cut down to what its `logits` output needs (serialized).

    ONNX Runtime runs every node of a graph whatever outputs are fetched; the exported graph
    also computes `class_ids` (a full-resolution upsample and argmax), which the other
    runtimes' timings leave out.
    """
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(path)
    outputs = [output.name for output in model.graph.output]
    if outputs == ["logits"]:
        return model.SerializeToString()
    if "logits" not in outputs:
        raise ValueError(f"{path}: no `logits` output (has {outputs})")
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return Extractor(model).extract_model(inputs, ["logits"]).SerializeToString()


class OnnxRuntimeRunner:
    """An `.onnx` file under ONNX Runtime (CPU or CUDA execution provider)."""

    def __init__(self, path: str, runtime: str, threads: int | None):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if runtime == "onnxruntime_cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise Unavailable("CUDAExecutionProvider not in "
                                  f"onnxruntime.get_available_providers() {available}",
                                  machine_wide=True)
            providers.insert(0, "CUDAExecutionProvider")
        self._session, (self._input, self._dtype, self.input_size) = open_onnx_session(
            logits_only_onnx(path), threads, providers)
        if runtime == "onnxruntime_cuda" and \
                "CUDAExecutionProvider" not in self._session.get_providers():
            raise Unavailable("ONNX Runtime fell back to "
                              f"{self._session.get_providers()} (CUDA provider not usable)",
                              machine_wide=True)
        self.input_dtype = np.dtype(self._dtype).name
        self.name = runtime

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image.astype(self._dtype)

    def __call__(self, feed: np.ndarray) -> list[np.ndarray]:
        return self._session.run(["logits"], {self._input: feed})


_RUNNERS = {"tf_cpu": TensorFlowRunner, "tf_xla_cpu": TensorFlowRunner,
            "tf_gpu": TensorFlowRunner, "tflite_xnnpack": InterpreterRunner,
            "tflite_reference": InterpreterRunner, "tflite_gpu": CompiledModelRunner,
            "onnxruntime_cpu": OnnxRuntimeRunner, "onnxruntime_cuda": OnnxRuntimeRunner}


def open_runner(path: str, runtime: str, threads: int | None):
    """The runner of `runtime` for the artifact at `path`.

    Raises:
      ValueError: an unknown runtime.
      Unavailable: the runtime cannot run on this machine.
    """
    if runtime not in _RUNNERS:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    return _RUNNERS[runtime](path, runtime, threads)


def seeded_image(input_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A random uint8 RGB batch [1, H, W, 3], the same for every runtime with the same seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(1, *input_size, 3), dtype=np.uint8)


def measure(runner, feed, warmup: int, runs: int) -> list[float]:
    """Seconds per call of `runner(feed)`: `warmup` untimed calls, then `runs` timed ones."""
    for _ in range(warmup):
        runner(feed)
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        runner(feed)
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


def run_case(path: str, runtime: str, threads: int | None, warmup: int, runs: int,
             seed: int = 0) -> dict:
    """Opens, warms up and times one case; never raises for a bad artifact or runtime.

    Returns:
      {"status": "ok", "median_s", "p90_s", ..., "times_s", "load_s", "input_size",
      "input_dtype"}, or {"status": "unavailable", "reason", "machine_wide"}, or
      {"status": "failed", "error", "stage"}; each with "peak_rss_bytes".
    """
    result: dict = {}
    stage = "load"
    try:
        begin = time.perf_counter()
        runner = open_runner(path, runtime, threads)
        result.update(load_s=time.perf_counter() - begin, input_size=list(runner.input_size),
                      input_dtype=runner.input_dtype)
        if hasattr(runner, "fully_accelerated"):
            result["fully_accelerated"] = runner.fully_accelerated
        stage = "run"
        feed = runner.prepare(seeded_image(runner.input_size, seed))
        if warmup > 0:  # the first call (tracing, XLA compilation, delegate setup) is one
            begin = time.perf_counter()
            runner(feed)
            result["first_call_s"] = time.perf_counter() - begin
            times = measure(runner, feed, warmup - 1, runs)
        else:
            times = measure(runner, feed, 0, runs)
            result["first_call_s"] = times[0]
        result.update(status="ok", **summarize(times), times_s=times)
    except Unavailable as e:
        result.update(status="unavailable", reason=e.reason, machine_wide=e.machine_wide)
    except Exception as e:  # noqa: BLE001 - any runtime error of this case is its result
        result.update(status="failed", error=_error_text(e), stage=stage)
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result
