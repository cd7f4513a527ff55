"""ONNX Runtime runtimes for `.onnx` files (CPU and CUDA execution providers). NumPy, onnx and
onnxruntime only.

The exported graph also computes `class_ids` (a full-resolution upsample and argmax), and ONNX
Runtime runs every node whatever outputs are fetched, so a session loads the graph cut down to
its `logits` output: the same work every other runtime does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from deploy.runtimes import Runtime, Unavailable, register


def logits_only(path: str) -> bytes:
    """The ONNX model at `path` cut down to what its `logits` output needs (serialized)."""
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


class OnnxSession:
    """A sequential ONNX Runtime session (`threads` intra-op threads, 1 inter-op thread)."""

    def __init__(self, model: str | bytes, threads: int | None, providers: list[str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(model, options, providers=providers)
        first = self._session.get_inputs()[0]
        self._input = first.name
        self._dtype = np.dtype(np.uint8 if first.type == "tensor(uint8)" else np.float32)
        self.input_size = (int(first.shape[1]), int(first.shape[2]))
        self.input_dtype = self._dtype.name
        self.info: dict[str, Any] = {"providers": self._session.get_providers()}

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(images).astype(self._dtype)

    def run(self, feed: np.ndarray) -> np.ndarray:
        return self._session.run(["logits"], {self._input: feed})[0]


@dataclasses.dataclass(frozen=True)
class OnnxRuntime(Runtime):
    """ONNX Runtime with one execution provider (the CPU one as the fallback)."""

    provider: str = "CPUExecutionProvider"

    def available(self) -> str | None:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        if self.provider not in providers:
            return f"{self.provider} not in onnxruntime.get_available_providers() {providers}"
        return None

    def _open(self, path: str, threads: int | None) -> OnnxSession:
        providers = list(dict.fromkeys([self.provider, "CPUExecutionProvider"]))
        session = OnnxSession(logits_only(path), threads, providers)
        if self.provider not in session.info["providers"]:
            raise Unavailable(f"ONNX Runtime fell back to {session.info['providers']} "
                              f"({self.provider} not usable)", machine_wide=True)
        return session


register(OnnxRuntime(
    "onnxruntime_cpu", "onnx", "onnxruntime", "cpu", "as stored",
    "ONNX Runtime CPUExecutionProvider (intra-op threads = threads, inter-op 1)"))
register(OnnxRuntime(
    "onnxruntime_cuda", "onnx", "onnxruntime", "gpu", "as stored",
    "ONNX Runtime CUDAExecutionProvider", verifies=False, provider="CUDAExecutionProvider"))
