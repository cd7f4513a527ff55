"""TensorFlow runtimes for the SavedModel (`serving_default`, `logits` output), and the Keras
model itself as the fp32 reference of verification."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import numpy as np

from deploy.runtimes import Runtime, register

SIGNATURE = "serving_default"


def _check(images: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (*input_size, 3):
        raise ValueError(f"expected images [batch, {input_size[0]}, {input_size[1]}, 3], got "
                         f"{list(images.shape)}")
    return images


@contextlib.contextmanager
def _onednn_bf16(enabled: bool):
    """oneDNN's bf16 auto mixed precision for the graphs run inside (TensorFlow optimizes a
    function per optimizer configuration, so calls outside keep their float32 graphs)."""
    if not enabled:
        yield
        return
    import tensorflow as tf

    option = "auto_mixed_precision_onednn_bfloat16"
    tf.config.optimizer.set_experimental_options({option: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({option: False})


class SavedModelSession:
    """`serving_default` inside a tf.function that returns only `logits` (TensorFlow prunes
    the `class_ids` upsample and argmax, as TF Serving's output filter does); with `bf16`,
    run under oneDNN's bf16 auto mixed precision (convolutions and matrix products in bf16,
    accumulating in float32)."""

    def __init__(self, path: str, device: str, jit_compile: bool, bf16: bool = False):
        import tensorflow as tf

        from deploy.layout import saved_model_version_dir

        self._tf, self._device = tf, device
        self.path = saved_model_version_dir(path)
        self._loaded = tf.saved_model.load(self.path)  # keeps the variables alive
        if SIGNATURE not in self._loaded.signatures:
            raise ValueError(f"{self.path}: no signature {SIGNATURE!r} (has "
                             f"{sorted(self._loaded.signatures)})")
        function = self._loaded.signatures[SIGNATURE]
        spec = function.structured_input_signature[1]["images"]
        self.input_size = (int(spec.shape[1]), int(spec.shape[2]))
        self.input_dtype = spec.dtype.name
        self.info: dict[str, Any] = {}
        self._bf16 = bf16
        self._function = tf.function(lambda images: function(images=images)["logits"],
                                     jit_compile=jit_compile)

    def prepare(self, images: np.ndarray):
        with self._tf.device("/CPU:0"):
            return self._tf.constant(_check(images, self.input_size), self._tf.uint8)

    def run(self, feed) -> np.ndarray:
        with self._tf.device(self._device), _onednn_bf16(self._bf16):
            return self._function(feed).numpy()


class KerasSession:
    """A tf_keras ICNet in memory (the fp32 reference that verification compares with)."""

    def __init__(self, model):
        import tensorflow as tf

        self._tf = tf
        self.input_size = tuple(int(d) for d in model.input_shape[1:3])
        self.input_dtype = "float32"
        self.info: dict[str, Any] = {}
        self._call = tf.function(lambda x: model(x, training=False)["conv6_cls"])

    def prepare(self, images: np.ndarray):
        return self._tf.constant(_check(images, self.input_size), self._tf.float32)

    def run(self, feed) -> np.ndarray:
        return self._call(feed).numpy()


@dataclasses.dataclass(frozen=True)
class TensorFlowRuntime(Runtime):
    """The SavedModel in TensorFlow on one device (XLA-compiled with `jit_compile`; under
    oneDNN's bf16 auto mixed precision with `precision` "bf16")."""

    jit_compile: bool = False

    def available(self) -> str | None:
        if self.device != "gpu":
            return super().available()
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return "no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)"
        return None

    def _open(self, path: str, threads: int | None) -> SavedModelSession:
        import tensorflow as tf

        if self.device == "cpu":
            try:  # possible only before TensorFlow runs its first op (a benchmark worker)
                tf.config.set_visible_devices([], "GPU")
                if threads:
                    tf.config.threading.set_intra_op_parallelism_threads(threads)
                    tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
        return SavedModelSession(path, "/GPU:0" if self.device == "gpu" else "/CPU:0",
                                 self.jit_compile, bf16=self.precision == "bf16")


register(TensorFlowRuntime(
    "tf_cpu", "saved_model", "tensorflow", "cpu", "fp32",
    "TensorFlow SavedModel on CPU (intra-op threads = threads, inter-op 1)"))
register(TensorFlowRuntime(
    "tf_cpu_bf16", "saved_model", "tensorflow", "cpu", "bf16",
    "TensorFlow SavedModel on CPU under oneDNN bf16 auto mixed precision (AMX or AVX512-BF16)"))
register(TensorFlowRuntime(
    "tf_xla_cpu", "saved_model", "tensorflow", "cpu", "fp32",
    "TensorFlow SavedModel on CPU, signature wrapped in tf.function(jit_compile=True)",
    verifies=False, opt_in=True, jit_compile=True))
register(TensorFlowRuntime(
    "tf_gpu", "saved_model", "tensorflow", "gpu", "fp32",
    "TensorFlow SavedModel on the first GPU", verifies=False))
