"""One runtime layer: every way the kit runs an artifact, behind one small interface.

A `Runtime` is (engine, device, precision) for one artifact format, with `available()` (None,
or the reason it cannot run on this machine) and `open(path, threads) -> Session`. A `Session`
has `input_size` (H, W), `input_dtype`, `prepare(images)` (uint8 RGB [1, H, W, 3] -> the
engine's input, done once outside any timing) and `run(feed)` (one inference -> float32
`conv6_cls` logits [1, h, w, C] at 1/4 resolution in host memory). Export verification (parity
and mIoU), deploy.predict and benchmarks.latency all open sessions through `REGISTRY`, so a
runtime registered here is verified and timed with no other change:

    register(MyRuntime(name="my_engine_cpu", format="onnx", ...))

Runtimes import their engine only in `available()` and `open()`: a LiteRT or ONNX Runtime
benchmark case never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Protocol

import numpy as np

from icnet import cpu


class Unavailable(Exception):
    """The runtime cannot run here (not a fault of the artifact).

    Args:
      reason: why, for reports.
      machine_wide: the reason holds for every artifact on this machine (no GPU), so callers
        need not ask again for the next artifact.
    """

    def __init__(self, reason: str, machine_wide: bool = False):
        super().__init__(reason)
        self.reason, self.machine_wide = reason, machine_wide


class Session(Protocol):
    """An artifact opened under one runtime."""

    input_size: tuple[int, int]
    input_dtype: str
    info: dict[str, Any]  # runtime facts for reports (e.g. fully_accelerated)

    def prepare(self, images: np.ndarray) -> Any:
        """uint8 RGB [1, H, W, 3] -> the feed of `run`."""

    def run(self, feed: Any) -> np.ndarray:
        """One inference: float32 logits [1, h, w, C]."""


@dataclasses.dataclass(frozen=True)
class Runtime:
    """One way of running artifacts of one format (subclasses implement `_open`).

    Attributes:
      name: the fixed name used in flags, reports and results.
      format: the artifact format it runs (deploy.layout.FORMATS).
      engine: the library ("tensorflow", "litert", "onnxruntime", ...).
      device: "cpu" or "gpu" (GPU runtimes are timed once per artifact, not per thread count).
      precision: the arithmetic it runs the artifact in ("fp32", "bf16", "fp16", or "as
        stored": the artifact's own).
      description: one line for reports.
      verifies: export verification runs every artifact of its format under it.
      opt_in: only run when named (a family name in `--runtimes` leaves it out).
    """

    name: str
    format: str
    engine: str
    device: str
    precision: str
    description: str
    verifies: bool = True
    opt_in: bool = False

    def available(self) -> str | None:
        """None when the runtime can run on this machine, else the reason it cannot (here:
        a bf16 or fp16 runtime on a CPU without native bf16 or fp16 arithmetic)."""
        if self.device == "cpu" and self.precision == "bf16" and not cpu.has_bf16():
            return cpu.bf16_reason()
        if self.device == "cpu" and self.precision == "fp16" and not cpu.has_fp16():
            return cpu.fp16_reason()
        return None

    def open(self, path: str, threads: int | None = None) -> Session:
        """Opens an artifact.

        Raises:
          Unavailable: the runtime cannot run here.
          ValueError: the artifact cannot be loaded (naming the file).
        """
        reason = self.available()
        if reason is not None:
            raise Unavailable(reason, machine_wide=True)
        try:
            return self._open(path, threads)
        except (Unavailable, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - each engine has its own parse errors
            if isinstance(e, ValueError) and path in str(e):
                raise
            raise ValueError(f"{path}: cannot load this {self.format} artifact under "
                             f"{self.name} ({error_text(e)[:300]})") from e

    def _open(self, path: str, threads: int | None) -> Session:
        raise NotImplementedError


REGISTRY: dict[str, Runtime] = {}
# A family name stands for the runtimes of a format (those not `opt_in`).
FAMILIES = {"tf": "saved_model", "tflite": "tflite", "onnx": "onnx", "openvino": "openvino"}


def register(runtime: Runtime) -> Runtime:
    """Adds a runtime to the registry (a later one of the same name replaces it)."""
    REGISTRY[runtime.name] = runtime
    return runtime


def get(name: str) -> Runtime:
    """The registered runtime of that name.

    Raises:
      ValueError: an unknown name, listing the known ones.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def for_format(fmt: str) -> list[Runtime]:
    """The runtimes of a format, in registration order (the first is its default)."""
    return [r for r in REGISTRY.values() if r.format == fmt]


def expand(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Runtime names from runtime and family names, in registration order.

    Raises:
      ValueError: an unknown name.
    """
    chosen = set()
    for name in names:
        if name in FAMILIES:
            chosen.update(r.name for r in for_format(FAMILIES[name]) if not r.opt_in)
        else:
            chosen.add(get(name).name)
    return tuple(name for name in REGISTRY if name in chosen)


def load(name: str, module: str | None = None) -> Runtime:
    """`get(name)`, importing `module` first (a runtime registered outside this package)."""
    if module and name not in REGISTRY:
        importlib.import_module(module)
    return get(name)


def open_session(path: str, runtime: str | None = None, threads: int | None = None) -> Session:
    """Opens an artifact under `runtime`, or under its format's default runtime.

    Raises:
      FileNotFoundError: no such path.
      ValueError: not an artifact, a runtime of another format, or a file that will not load.
      Unavailable: the runtime cannot run here.
    """
    from deploy.layout import artifact_format

    fmt = artifact_format(path)
    chosen = get(runtime) if runtime else for_format(fmt)[0]
    if chosen.format != fmt:
        raise ValueError(f"{path}: a {fmt} artifact; runtime {chosen.name} runs {chosen.format}")
    return chosen.open(path, threads)


def error_text(error: BaseException) -> str:
    """`Type: message` on one line; LiteRT's bare source locations are said to be that."""
    import re

    text = " ".join(str(error).split())
    if text and not re.sub(r"(└\s*)?ERROR: \[[^\]]*\]", "", text).strip():
        return f"{type(error).__name__} (no message beyond source locations: {text})"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def dequantize(value: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """Integer logits to float32 with (scale, zero point); float32 passes through."""
    if value.dtype == np.float32:
        return value
    scale, zero_point = quantization
    return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)


def pixels_as_input(image: np.ndarray, dtype, quantization: tuple[float, int]) -> np.ndarray:
    """uint8 pixels for an input of `dtype` with (scale, zero point) `quantization`: float32
    pixels, raw uint8 (scale 1 or unquantized), or requantized integers."""
    if np.dtype(dtype) == np.float32:
        return image.astype(np.float32)
    scale, zero_point = quantization
    if np.dtype(dtype) == np.uint8 and scale in (0.0, 1.0) and zero_point == 0:
        return image.astype(np.uint8)
    info = np.iinfo(dtype)
    return np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(dtype)


# The built-in engines register their runtimes on import, in this order (a format's first
# runtime is its default).
from deploy.runtimes import tensorflow, litert, onnxruntime, openvino  # noqa: E402,F401
