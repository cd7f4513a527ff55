"""Opening `.tflite` files in the LiteRT Interpreter and `.onnx` models in ONNX Runtime, and
uint8 pixels as a TFLite input: the one way verification (deploy.runners) and the benchmarks
(benchmarks.runtimes) do it. NumPy only at import, so the benchmark workers that run these
runtimes stay TensorFlow-free."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def open_interpreter(path: str, threads: int | None, xnnpack: bool = True):
    """An allocated `ai_edge_litert` Interpreter: XNNPACK (the default delegate) or, with
    `xnnpack=False`, the reference builtin kernels; `threads` None is the runtime's default."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.AUTO if xnnpack
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = Interpreter(model_path=path, num_threads=threads,
                              experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


def open_onnx_session(model: str | bytes, threads: int | None,
                      providers: Sequence[str] = ("CPUExecutionProvider",)):
    """An ONNX Runtime session (sequential; `threads` intra-op threads and 1 inter-op thread
    when given) and its first input as (name, NumPy dtype, (H, W))."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=list(providers))
    first = session.get_inputs()[0]
    dtype = np.dtype(np.uint8 if first.type == "tensor(uint8)" else np.float32)
    return session, (first.name, dtype, (int(first.shape[1]), int(first.shape[2])))


def pixels_as_input(image: np.ndarray, dtype, quantization: tuple[float, int]) -> np.ndarray:
    """uint8 pixels for an input of `dtype` with (scale, zero point) `quantization`: float32
    pixels, raw uint8 (scale 1 or unquantized), or requantized integers."""
    if dtype == np.float32:
        return image.astype(np.float32)
    scale, zero_point = quantization
    if dtype == np.uint8 and scale in (0.0, 1.0) and zero_point == 0:
        return image.astype(np.uint8)
    info = np.iinfo(dtype)
    return np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(dtype)
