"""OpenVINO runtimes for OpenVINO IR files on the CPU, at the float32 or the bf16 precision
hint (an int8 IR runs its quantized layers in int8 under either). NumPy and openvino only.

OpenVINO's CPU plugin runs bf16 by default on a CPU with native bf16 (AMX or AVX512-BF16), so
`openvino_cpu` sets the float32 hint explicitly; `openvino_cpu_bf16` asks for bf16. Sessions
use one stream, the latency hint, `threads` inference threads and no CPU pinning, and report
the convolution kernels the plugin chose (e.g. `brgconv_avx512_amx_bf16`) in `info`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any

import numpy as np

from deploy.runtimes import Runtime, register


def import_openvino():
    """`import openvino`, keeping the root logger's handlers (absl's among them), which the
    package's first import removes."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import openvino
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return openvino


class OpenVinoSession:
    """A compiled IR and one infer request."""

    def __init__(self, path: str, threads: int | None, precision: str):
        ov = import_openvino()
        import openvino.properties as props
        import openvino.properties.hint as hints

        config = {props.num_streams: 1, hints.performance_mode: hints.PerformanceMode.LATENCY,
                  hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
                  hints.enable_cpu_pinning: False}
        if threads:
            config[props.inference_num_threads] = threads
        self._compiled = ov.Core().compile_model(path, "CPU", config)
        self._request = self._compiled.create_infer_request()
        shape = list(self._compiled.input(0).get_partial_shape().to_shape())
        self.input_size = (int(shape[1]), int(shape[2]))
        self.input_dtype = self._compiled.input(0).get_element_type().to_dtype().name
        kernels = collections.Counter(
            op.get_rt_info()["primitiveType"].astype(str)
            for op in self._compiled.get_runtime_model().get_ordered_ops()
            if op.get_rt_info()["layerType"].astype(str) == "Convolution")
        self.info: dict[str, Any] = {"conv_kernels": dict(sorted(kernels.items()))}

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(images, dtype=self.input_dtype)

    def run(self, feed: np.ndarray) -> np.ndarray:
        self._request.infer({0: feed})
        return np.array(self._request.get_output_tensor(0).data, np.float32)


@dataclasses.dataclass(frozen=True)
class OpenVinoRuntime(Runtime):
    """OpenVINO's CPU plugin at one inference precision hint ("fp32" or "bf16")."""

    def available(self) -> str | None:
        try:
            import_openvino()
        except ImportError as e:
            return f"openvino is not installed ({e})"
        return super().available()

    def _open(self, path: str, threads: int | None) -> OpenVinoSession:
        return OpenVinoSession(path, threads, self.precision)


register(OpenVinoRuntime(
    "openvino_cpu", "openvino", "openvino", "cpu", "fp32",
    "OpenVINO CPU plugin, float32 precision hint (int8 layers of an int8 IR in int8)"))
register(OpenVinoRuntime(
    "openvino_cpu_bf16", "openvino", "openvino", "cpu", "bf16",
    "OpenVINO CPU plugin, bf16 precision hint (AMX or AVX512-BF16; int8 layers in int8)"))
