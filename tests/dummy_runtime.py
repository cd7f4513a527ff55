"""A test runtime registered from outside deploy.runtimes: ONNX Runtime on CPU under another name.

Importing this module registers `dummy_onnx_cpu` for the "onnx" format (one line, at the
bottom). Its sessions wrap ONNX Runtime's and add 0.0 to the logits, so they compute real
logits (export verification's parity and mIoU hold) while being a runtime of their own: a
session's `info` says it ran here. Tests import it as `dummy_runtime` with the tests
directory on the path (benchmark workers get it through PYTHONPATH), and remove it from
`deploy.runtimes.REGISTRY` afterwards.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from deploy.runtimes import Runtime, register
from deploy.runtimes.onnxruntime import OnnxSession, logits_only

NAME = "dummy_onnx_cpu"


class ShiftedSession:
    """An ONNX Runtime CPU session whose logits get 0.0 added."""

    def __init__(self, inner: OnnxSession):
        self._inner = inner
        self.input_size = inner.input_size
        self.input_dtype = inner.input_dtype
        self.info: dict[str, Any] = {**inner.info, "dummy_runtime": True}

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return self._inner.prepare(images)

    def run(self, feed: np.ndarray) -> np.ndarray:
        return self._inner.run(feed) + np.float32(0.0)


@dataclasses.dataclass(frozen=True)
class DummyOnnxRuntime(Runtime):
    """ONNX Runtime's CPUExecutionProvider behind `ShiftedSession`."""

    def available(self) -> str | None:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        if "CPUExecutionProvider" not in providers:
            return f"CPUExecutionProvider not in {providers}"
        return None

    def _open(self, path: str, threads: int | None) -> ShiftedSession:
        return ShiftedSession(OnnxSession(logits_only(path), threads, ["CPUExecutionProvider"]))


ABOUT = "Test runtime: ONNX Runtime CPU with 0.0 added to the logits"
register(DummyOnnxRuntime(NAME, "onnx", "onnxruntime", "cpu", "as stored", ABOUT, verifies=True))
