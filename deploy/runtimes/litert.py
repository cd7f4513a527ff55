"""LiteRT runtimes for `.tflite` files: the Interpreter with XNNPACK or the reference kernels,
and the CompiledModel API on the GPU accelerator. NumPy, ctypes and ai_edge_litert only."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from deploy import vulkan
from deploy.layout import INPUT_NAME, OUTPUT_NAME, SIGNATURE
from deploy.runtimes import (Runtime, Unavailable, dequantize, error_text, pixels_as_input,
                             register)


def open_interpreter(path: str, threads: int | None, xnnpack: bool = True):
    """An allocated Interpreter: XNNPACK (the default delegate) or, with `xnnpack=False`, the
    reference builtin kernels; `threads` None is the runtime's default."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.AUTO if xnnpack
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = Interpreter(model_path=path, num_threads=threads,
                              experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


class InterpreterSession:
    """The `serving_default` signature (`images` -> `logits`, dequantized) through a
    SignatureRunner; a file without it (not exported by the kit, e.g. one convolution of a
    latency table) through its first input and output."""

    def __init__(self, path: str, threads: int | None, xnnpack: bool):
        self._interpreter = open_interpreter(path, threads, xnnpack)
        signatures = self._interpreter.get_signature_list()
        if INPUT_NAME in signatures.get(SIGNATURE, {}).get("inputs", ()):
            self._runner = self._interpreter.get_signature_runner(SIGNATURE)
            self._input = self._runner.get_input_details()[INPUT_NAME]
            self._output = self._runner.get_output_details()[OUTPUT_NAME]
        else:
            self._runner = None
            self._input = self._interpreter.get_input_details()[0]
            self._output = self._interpreter.get_output_details()[0]
        self.input_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        self.input_dtype = np.dtype(self._input["dtype"]).name
        self.info: dict[str, Any] = {"signature": self._runner is not None}

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return pixels_as_input(images, self._input["dtype"], self._input["quantization"])

    def run(self, feed: np.ndarray) -> np.ndarray:
        if self._runner is not None:
            value = self._runner(**{INPUT_NAME: feed})[OUTPUT_NAME]
        else:
            self.compute(feed)
            value = self._interpreter.get_tensor(self._output["index"])
        return dequantize(value, self._output["quantization"])

    def compute(self, feed: np.ndarray) -> None:
        """Runs the model on `feed` without reading the output back (see `run`)."""
        self._interpreter.set_tensor(self._input["index"], feed)
        self._interpreter.invoke()


class CompiledModelSession:
    """LiteRT's CompiledModel (input and output buffers made once): on the GPU accelerator,
    or on the CPU accelerator with XNNPACK delegate flags (`xnnpack_flags`)."""

    def __init__(self, path: str, gpu: bool, threads: int | None = None,
                 xnnpack_flags: int | None = None):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_litert.options import CpuOptions, Options

        # The Interpreter verifies the flatbuffer; CompiledModel crashes on a corrupt one.
        details = Interpreter(model_path=path).get_output_details()[0]
        self._quantization = details["quantization"]
        if gpu:
            self._model = _gpu_model(path)
        else:
            self._model = CompiledModel.from_file(path, options=Options(
                HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=threads or 1,
                                                                xnnpack_flags=xnnpack_flags)))
        signature = next(iter(self._model.get_signature_list()))
        inputs = list(self._model.get_input_tensor_details(signature).values())
        outputs = list(self._model.get_output_tensor_details(signature).values())
        self._input_dtype = np.dtype(inputs[0]["dtype"])
        self._output = (np.dtype(outputs[0]["dtype"]), [int(n) for n in outputs[0]["shape"]])
        self._inputs = self._model.create_input_buffers(0)
        self._outputs = self._model.create_output_buffers(0)
        self.input_size = (int(inputs[0]["shape"][1]), int(inputs[0]["shape"][2]))
        self.input_dtype = self._input_dtype.name
        self.info: dict[str, Any] = {
            "fully_accelerated": bool(self._model.is_fully_accelerated())}
        if gpu:
            self.info.update(_vulkan_device())

    def prepare(self, images: np.ndarray) -> np.ndarray:
        # CompiledModel exposes no input quantization; the integer models take raw pixels.
        return images.astype(self._input_dtype)

    def run(self, feed: np.ndarray) -> np.ndarray:
        self.compute(feed)
        dtype, shape = self._output
        value = self._outputs[0].read(int(np.prod(shape)), dtype).reshape(shape)
        return dequantize(value, self._quantization)


    def compute(self, feed: np.ndarray) -> None:
        """Runs the model on `feed` without reading the output back (see `run`)."""
        self._inputs[0].write(feed)
        self._model.run_by_index(0, self._inputs, self._outputs)


def _gpu_model(path: str):
    """A CompiledModel on HardwareAccelerator.GPU.

    Raises:
      Unavailable: no GPU model can be created while the file loads on the CPU accelerator
        (so the file is fine and the GPU path is what is missing).
    """
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    try:
        return CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.GPU)
    except Exception as gpu_error:  # noqa: BLE001 - LiteRT raises RuntimeError and more
        try:
            CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.CPU)
        except Exception as cpu_error:  # noqa: BLE001
            raise RuntimeError(f"LiteRT cannot load the model: {error_text(cpu_error)}") \
                from cpu_error
        raise Unavailable("LiteRT CompiledModel could not create a GPU "
                          f"(HardwareAccelerator.GPU) model: {error_text(gpu_error)}") \
            from gpu_error


def _vulkan_device() -> dict:
    """{"vulkan_device", "software_device"} of the device the GPU accelerator runs on (the
    first Vulkan device: on Linux, LiteRT's WebGPU runs over Vulkan)."""
    try:
        device = vulkan.devices_in_this_process()[0]
    except vulkan.NoVulkanDevice as e:
        return {"vulkan_device": f"unknown ({e})", "software_device": None}
    return {"vulkan_device": device.describe(), "software_device": device.software}


@dataclasses.dataclass(frozen=True)
class InterpreterRuntime(Runtime):
    """The LiteRT Interpreter with XNNPACK (`xnnpack`) or the builtin reference kernels."""

    xnnpack: bool = True

    def _open(self, path: str, threads: int | None) -> InterpreterSession:
        return InterpreterSession(path, threads, self.xnnpack)


@dataclasses.dataclass(frozen=True)
class CompiledModelRuntime(Runtime):
    """LiteRT's CompiledModel on HardwareAccelerator.GPU (no thread setting)."""

    def _open(self, path: str, threads: int | None) -> CompiledModelSession:
        del threads
        return CompiledModelSession(path, gpu=True)


# XNNPACK delegate flags (xnnpack_delegate.h): QS8 | QU8 (the defaults) | FORCE_FP16.
XNNPACK_FORCE_FP16 = 0x1 | 0x2 | 0x4


@dataclasses.dataclass(frozen=True)
class XnnpackFp16Runtime(Runtime):
    """XNNPACK with fp16 arithmetic (its FORCE_FP16 flag, reachable only through LiteRT's
    CompiledModel CPU options): float models computed in fp16, natively on AVX512-FP16 or
    ARM fp16 CPUs. Elsewhere XNNPACK emulates fp16 and runs slower than fp32, so it is
    unavailable there."""

    def _open(self, path: str, threads: int | None) -> CompiledModelSession:
        return CompiledModelSession(path, gpu=False, threads=threads,
                                    xnnpack_flags=XNNPACK_FORCE_FP16)


register(InterpreterRuntime(
    "tflite_xnnpack", "tflite", "litert", "cpu", "as stored",
    "LiteRT Interpreter with the default (XNNPACK) delegate"))
register(InterpreterRuntime(
    "tflite_reference", "tflite", "litert", "cpu", "as stored",
    "LiteRT Interpreter, builtin kernels without default delegates", verifies=False,
    xnnpack=False))
register(XnnpackFp16Runtime(
    "tflite_xnnpack_fp16", "tflite", "litert", "cpu", "fp16",
    "LiteRT CompiledModel on CPU, XNNPACK with FORCE_FP16 (native fp16 arithmetic)"))
register(CompiledModelRuntime(
    "tflite_gpu", "tflite", "litert", "gpu", "as stored",
    "LiteRT CompiledModel with HardwareAccelerator.GPU (WebGPU over Vulkan; a software Vulkan "
    "device is labelled as such)", verifies=False))
