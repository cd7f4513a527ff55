"""Quantization: a closed set of names mapped to TFLite converter settings, PTQ and QAT.

`deploy.layout.QUANTIZATIONS` is the whole vocabulary (`fp32|fp16|dynamic|int8|qat`);
`quantization_spec` rejects anything else. `configure_converter` applies a spec to a
`tf.lite.TFLiteConverter`.

Post-training int8 (`int8`) calibrates on a representative dataset of training images
(`representative_dataset`). Quantization-aware training (`qat`) wraps the tf_keras model with
TFMOT (`quantization_aware_model`) using `ICNetQuantizeScheme`, TFMOT's default 8-bit scheme
with two changes that ICNet needs:

- QuantizeConfigs for the layers TFMOT's registry does not know or gets wrong here:
  `Interp` and `LegacyResize` (our bilinear resizes) and `AveragePooling2D` are *pass-through*
  (no fake-quant on their output: TFLite's int8 RESIZE_BILINEAR and AVERAGE_POOL_2D require
  the output scale to equal the input scale, and the default registry's output quantizer on
  AveragePooling2D makes the converter fail with "quantization parameters violate the same
  scale constraint"); `Preprocess` (channel reversal and mean subtraction) quantizes its
  output only.
- A Conv2D followed by a ReLU keeps its (per-channel) kernel quantizer. TFMOT's
  `LayerReLUQuantize` transform gives such a conv a no-op config, which silently trains its
  kernel in float; ours only drops the conv's output quantizer (the ReLU quantizes the fused
  output), as TFLite fuses the pair.
- The 5-input pyramid-pooling sum (`conv5_3_sum`) becomes a chain of 2-input Adds
  (`split_multi_input_adds`, the same float result), so each partial sum gets an output
  quantizer; otherwise the converter keeps those ADDs in float.

The converted QAT graph is int8 from the uint8 input to the final DEQUANTIZE of the logits.

QAT fine-tuning distills the float model (`finetune` with a teacher) at a small Adam learning
rate; it starts from calibrated ranges (`calibrate_ranges`: activation min/max of the float model
on calibration images) instead of TFMOT's [-6, 6] initial ranges, which an EMA of decay 0.999
would take thousands of steps to forget; the input quantizer is pinned to [0, 255] so that the
converted model's uint8 input is the raw pixel value (scale 1, zero point 0).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from deploy.layout import QUANTIZATIONS
from icnet.layers import Interp, LegacyResize, Preprocess
from icnet.losses import branch_loss
from icnet.training import make_optimizer, run_loop

PIXEL_RANGE = (0.0, 255.0)


@dataclasses.dataclass(frozen=True)
class QuantizationSpec:
    """How one quantization name is converted.

    Attributes:
      name: one of QUANTIZATIONS.
      description: one line for reports.
      optimize: set `tf.lite.Optimize.DEFAULT` (weight quantization, calibration).
      float16_weights: store weights as float16 (`supported_types = [tf.float16]`).
      calibrated: needs a representative dataset (post-training full-integer).
      integer_only: int8 kernels only (`TFLITE_BUILTINS_INT8`), uint8 image input.
      quantization_aware: converts a TFMOT quantization-aware model.
    """

    name: str
    description: str
    optimize: bool = False
    float16_weights: bool = False
    calibrated: bool = False
    integer_only: bool = False
    quantization_aware: bool = False


_SPECS = {
    "fp32": QuantizationSpec("fp32", "float32 weights and activations"),
    "fp16": QuantizationSpec("fp16", "float16 weights, float32 activations",
                             optimize=True, float16_weights=True),
    "dynamic": QuantizationSpec("dynamic", "dynamic-range: int8 weights, float activations",
                                optimize=True),
    "int8": QuantizationSpec("int8", "full-integer int8 (post-training, calibrated), uint8 "
                             "image input", optimize=True, calibrated=True, integer_only=True),
    "qat": QuantizationSpec("qat", "full-integer int8 from quantization-aware fine-tuning, "
                            "uint8 image input", optimize=True, integer_only=True,
                            quantization_aware=True),
}


def quantization_spec(name: str) -> QuantizationSpec:
    """The spec of a quantization name.

    Raises:
      ValueError: `name` is not one of QUANTIZATIONS.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown quantization {name!r}; choose from {', '.join(QUANTIZATIONS)}")
    return _SPECS[name]


def configure_converter(converter: tf.lite.TFLiteConverter, spec: QuantizationSpec,
                        representative_data: Callable[[], Iterator[list]] | None = None
                        ) -> tf.lite.TFLiteConverter:
    """Applies `spec` to `converter` (in place; also returned).

    Raises:
      ValueError: a calibrated spec without `representative_data`.
    """
    if spec.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if spec.float16_weights:
        converter.target_spec.supported_types = [tf.float16]
    if spec.calibrated:
        if representative_data is None:
            raise ValueError(f"{spec.name} needs calibration images (a representative dataset)")
        converter.representative_dataset = representative_data
    if spec.integer_only:
        if not spec.quantization_aware:
            # (A QAT model's ranges come from its fake-quant ops; setting the op set here
            # would make the converter ask for a representative dataset.)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    return converter


def representative_dataset(images: Sequence[np.ndarray]) -> Callable[[], Iterator[list]]:
    """A TFLite representative dataset over uint8 RGB images [H, W, 3] (the export size).

    The first sample's two top-left pixels are set to 0 and 255 so that the calibrated input
    range is exactly [0, 255]: the uint8 input then carries raw pixels (scale 1, zero point 0).
    """
    if not len(images):
        raise ValueError("calibration needs at least one image")

    def generate():
        begin = time.time()
        for index, image in enumerate(images):
            sample = np.asarray(image, np.float32)[None].copy()
            if index == 0:
                sample[0, 0, 0, :], sample[0, 0, 1, :] = PIXEL_RANGE
            yield [sample]
            if (index + 1) % 10 == 0 or index + 1 == len(images):
                logging.info("calibration: %d/%d images (%.1f s)", index + 1, len(images),
                             time.time() - begin)

    return generate


# --------------------------------------------------------------------------------------------
# Quantization-aware training (TFMOT). TFMOT is imported lazily: importing it sets
# TF_USE_LEGACY_KERAS, which nothing else here needs.


def _tfmot():
    import tensorflow_model_optimization as tfmot
    return tfmot


def _quantize_config_classes():
    """The QuantizeConfig classes (built once, on first use, since they subclass TFMOT's)."""
    if _quantize_config_classes.cache is not None:
        return _quantize_config_classes.cache
    tfmot = _tfmot()
    keras_q = tfmot.quantization.keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_layout_transform as layout,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_scheme as scheme,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_transforms as transforms,
    )

    @tf_keras.utils.register_keras_serializable("icnet_quantize")
    class PassThroughQuantizeConfig(keras_q.QuantizeConfig):
        """No weights, no fake-quant on the output: the output keeps the input's scale.

        For layers whose int8 TFLite kernels require equal input and output scales
        (bilinear resize, average pooling).
        """

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    @tf_keras.utils.register_keras_serializable("icnet_quantize")
    class OutputQuantizeConfig(PassThroughQuantizeConfig):
        """Fake-quantizes the layer's output only (8 bits, asymmetric, per tensor)."""

        def get_output_quantizers(self, layer):
            return [keras_q.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    @tf_keras.utils.register_keras_serializable("icnet_quantize")
    class ConvKernelQuantizeConfig(registry.Default8BitConvQuantizeConfig):
        """A Conv2D fused with the ReLU after it: per-channel kernel quantizer, no output."""

        def __init__(self, weight_attrs=("kernel",), activation_attrs=(),
                     quantize_output=False):
            super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)

        def get_config(self):
            return {}

    class ConvReLUQuantize(transforms.LayerReLUQuantize):
        """Conv2D -> ReLU: keep the conv's kernel quantizer (TFMOT would drop it)."""

        def pattern(self):
            return transforms.LayerPattern("ReLU", inputs=[transforms.LayerPattern("Conv2D")])

        def replacement(self, match_layer):
            match_layer.input_layers[0].metadata["quantize_config"] = ConvKernelQuantizeConfig()
            return match_layer

        def custom_objects(self):
            return {"ConvKernelQuantizeConfig": ConvKernelQuantizeConfig}

    class AddReLUQuantize(transforms.LayerReLUQuantize):
        """Add -> ReLU: no fake-quant between them (TFMOT's rule, without its Conv2D case)."""

        def pattern(self):
            return transforms.LayerPattern("ReLU", inputs=[transforms.LayerPattern("Add")])

    class LayoutTransform(layout.Default8BitQuantizeLayoutTransform):
        def apply(self, model, layer_quantize_map):
            from tensorflow_model_optimization.python.core.quantization.keras.\
                graph_transformations import model_transformer
            # TFMOT's default list restricted to the patterns ICNet has, with its
            # LayerReLUQuantize split into ConvReLUQuantize and AddReLUQuantize. No BN
            # transforms: QAT runs on the BN-merged model.
            steps = [transforms.InputLayerQuantize(), ConvReLUQuantize(), AddReLUQuantize()]
            return model_transformer.ModelTransformer(
                model, steps, set(layer_quantize_map.keys()), layer_quantize_map).transform()

    class ICNetQuantizeScheme(scheme.Default8BitQuantizeScheme):
        def get_layout_transformer(self):
            return LayoutTransform()

    classes = {"PassThroughQuantizeConfig": PassThroughQuantizeConfig,
               "OutputQuantizeConfig": OutputQuantizeConfig,
               "ConvKernelQuantizeConfig": ConvKernelQuantizeConfig,
               "ICNetQuantizeScheme": ICNetQuantizeScheme}
    _quantize_config_classes.cache = classes
    return classes


_quantize_config_classes.cache = None

# Layer classes that get a custom QuantizeConfig, by config class name.
_CUSTOM_CONFIGS = (
    ((Interp, LegacyResize, tf_keras.layers.AveragePooling2D), "PassThroughQuantizeConfig"),
    ((Preprocess,), "OutputQuantizeConfig"),
)


def quantize_configs() -> dict[str, type]:
    """The custom QuantizeConfig classes by name (for `tfmot...quantize_scope`)."""
    return {name: cls for name, cls in _quantize_config_classes().items()
            if name.endswith("QuantizeConfig")}


def split_multi_input_adds(model: tf_keras.Model) -> tf_keras.Model:
    """A copy of the model with every n-input `Add` as a chain of 2-input ones.

    Keras sums n inputs left to right, so the chain computes the identical float result; the
    partial sums `<name>_partial<i>` (the last keeps `<name>`) each get an output quantizer, as
    the converted int8 graph has one per ADD. Without this, TFMOT quantizes only the final sum
    and the converter leaves the pyramid-pooling sum's partial ADDs in float.
    """
    if not any(isinstance(layer, tf_keras.layers.Add) and len(layer.input) > 2
               for layer in model.layers):
        return model
    values = {id(tensor): tensor for tensor in model.inputs}
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.InputLayer):
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        args = [values[id(tensor)] for tensor in inputs]
        if isinstance(layer, tf_keras.layers.Add) and len(args) > 2:
            result = args[0]
            for index, operand in enumerate(args[1:], 1):
                name = layer.name if index == len(args) - 1 else f"{layer.name}_partial{index}"
                result = tf_keras.layers.Add(name=name)([result, operand])
        else:
            copy = layer.__class__.from_config(layer.get_config())
            result = copy(args if isinstance(layer.input, list) else args[0])
            copy.set_weights(layer.get_weights())
        values[id(layer.output)] = result
    outputs = {name: values[id(tensor)] for name, tensor in
               zip(model.output_names, model.outputs)}
    return tf_keras.Model(model.inputs, outputs, name=model.name)


def quantization_aware_model(model: tf_keras.Model) -> tf_keras.Model:
    """A TFMOT quantization-aware copy of a BN-merged ICNet (weights copied).

    Raises:
      ValueError: the model has BatchNormalization layers (fold them first: QAT runs on the
        BN-merged variant).
    """
    if any(isinstance(layer, tf_keras.layers.BatchNormalization) for layer in model.layers):
        raise ValueError("quantization-aware training needs the BN-merged model")
    tfmot = _tfmot()
    keras_q = tfmot.quantization.keras
    classes = _quantize_config_classes()

    def annotate(layer):
        for layer_types, config_name in _CUSTOM_CONFIGS:
            if isinstance(layer, layer_types):
                return keras_q.quantize_annotate_layer(layer, classes[config_name]())
        return keras_q.quantize_annotate_layer(layer)

    model = split_multi_input_adds(model)
    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with keras_q.quantize_scope({**quantize_configs(), "Interp": Interp,
                                 "LegacyResize": LegacyResize, "Preprocess": Preprocess}):
        return keras_q.quantize_apply(annotated, scheme=classes["ICNetQuantizeScheme"]())


def _range_variables(qat_model: tf_keras.Model):
    """[(wrapped layer name, min var, max var)] of every activation/output quantizer."""
    found = []
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        by_suffix = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        for prefix in ("output", "post_activation"):
            if f"{prefix}_min" in by_suffix:
                found.append((inner.name, by_suffix[f"{prefix}_min"], by_suffix[f"{prefix}_max"]))
    return found


def input_quantizer(qat_model: tf_keras.Model):
    """The QuantizeLayer that TFMOT puts after the image input."""
    for layer in qat_model.layers:
        if type(layer).__name__ == "QuantizeLayer":
            return layer
    raise ValueError("not a quantization-aware model: no QuantizeLayer after its input")


def pin_input_range(qat_model: tf_keras.Model, low: float = PIXEL_RANGE[0],
                    high: float = PIXEL_RANGE[1]) -> None:
    """Sets the input quantizer's range to [low, high] (raw uint8 pixels: scale 1)."""
    layer = input_quantizer(qat_model)
    for variable in layer.weights:
        if variable.name.endswith("_min:0"):
            variable.assign(low)
        elif variable.name.endswith("_max:0"):
            variable.assign(high)


def refresh_weight_ranges(qat_model: tf_keras.Model, image: np.ndarray) -> None:
    """Sets every kernel quantizer's range from the current kernels.

    TFMOT updates weight ranges only in training-mode calls; this runs one on `image` and
    restores the activation and input ranges that such a call also moves.
    """
    saved = [(var, var.numpy()) for _, low, high in _range_variables(qat_model)
             for var in (low, high)]
    saved += [(var, var.numpy()) for var in input_quantizer(qat_model).weights]
    qat_model(np.asarray(image, np.float32)[None], training=True)
    for var, value in saved:
        var.assign(value)


def calibrate_ranges(qat_model: tf_keras.Model, float_model: tf_keras.Model,
                     images: Iterable[np.ndarray]) -> int:
    """Initialises every activation range of `qat_model` from `float_model` on `images`.

    Each quantizer's [min, max] becomes the min/max (widened to include 0) of the matching
    float layer's output over the images; the input range is pinned to [0, 255].

    Returns:
      The number of ranges set.
    """
    ranges = _range_variables(qat_model)
    names = sorted({name for name, _, _ in ranges})
    float_model = split_multi_input_adds(float_model)  # the QAT graph's partial sums
    probe = tf_keras.Model(float_model.inputs,
                           [float_model.get_layer(name).output for name in names])
    low = {name: 0.0 for name in names}
    high = {name: 0.0 for name in names}
    count = 0
    for image in images:
        outputs = probe(np.asarray(image, np.float32)[None], training=False)
        if len(names) == 1:
            outputs = [outputs]
        for name, value in zip(names, outputs):
            low[name] = min(low[name], float(tf.reduce_min(value)))
            high[name] = max(high[name], float(tf.reduce_max(value)))
        count += 1
    if not count:
        raise ValueError("range calibration needs at least one image")
    refresh_weight_ranges(qat_model, image)
    for name, min_var, max_var in ranges:
        min_var.assign(low[name])
        max_var.assign(max(high[name], low[name] + 1e-6))
    pin_input_range(qat_model)
    logging.info("QAT: calibrated %d activation ranges on %d images", len(ranges), count)
    return len(ranges)


QAT_LOSSES = ("distill", "labels")


def distillation_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy of the student's softmax against the teacher's, per pixel."""
    teacher = tf.nn.softmax(tf.cast(teacher_logits, tf.float32), axis=-1)
    student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32), axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(teacher * student, axis=-1))


def finetune(qat_model: tf_keras.Model, batches: Iterable, steps: int, num_classes: int,
             teacher: tf_keras.Model | None = None, learning_rate: float = 2e-6,
             log_every: int = 10, batch_size: int = 1) -> dict:
    """Quantization-aware fine-tuning of the `conv6_cls` output (Adam, poly decay to 0), in
    `icnet.training.run_loop` (NaN stop, progress lines, SIGINT/SIGTERM).

    With a `teacher` (the float model at the same input size) the loss is distillation: the
    student's softmax is pulled toward the teacher's, so fine-tuning recovers what
    quantization loses instead of moving the model away from the float one (the default of
    `deploy.export`). Without one, it is the softmax cross-entropy on the labels.

    BN-merged ICNets are sharply curved: momentum SGD diverges above a learning rate of about
    1e-5 (measured on a trained fs=1 model; 1e-4 loses half the mIoU in 100 steps), so keep
    the rate small; 1e-6 to 3e-6 (Adam) keeps or improves the agreement with the float model.

    Args:
      qat_model: from `quantization_aware_model`.
      batches: (images float32 [B, H, W, 3] in 0..255, labels int [B, H, W]) pairs, at the
        model's input size.
      steps: optimizer steps.
      num_classes: labels outside [0, num_classes) are ignored.
      teacher: the float model for distillation, or None for label cross-entropy.
      learning_rate: base learning rate.
      log_every: steps between progress lines.
      batch_size: images per batch (for the progress lines' speed).

    Returns:
      {"steps", "loss" (last), "objective", "seconds"}.

    Raises:
      icnet.training.TrainingDiverged: the loss became NaN or infinite.
    """
    objective = "distill" if teacher is not None else "labels"
    if steps < 1:
        return {"steps": 0, "loss": None, "objective": objective, "seconds": 0.0}
    optimizer, schedule = make_optimizer("adam", learning_rate, steps)
    variables = qat_model.trainable_variables

    @tf.function
    def train_step(batch):
        images, labels = batch
        with tf.GradientTape() as tape:
            logits = qat_model(images, training=True)["conv6_cls"]
            if teacher is not None:
                loss = distillation_loss(logits,
                                         teacher(images, training=False)["conv6_cls"])
            else:
                loss = branch_loss(logits, labels, num_classes)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {objective: loss}

    last = {}

    def keep_batch(step: int, batch) -> None:
        last["images"] = batch[0]

    result = run_loop(train_step, iter(batches), optimizer, schedule, steps=steps,
                      images_per_step=batch_size, log_every=log_every, name="QAT step",
                      after_step=keep_batch)
    refresh_weight_ranges(qat_model, last["images"][0])
    pin_input_range(qat_model)
    return {"steps": steps, "loss": result["losses"][objective], "objective": objective,
            "seconds": result["seconds"]}


def _qat_structure(model: tf_keras.Model) -> list[tuple[str, str]]:
    """(layer class, name of the wrapped ICNet layer) per layer. TFMOT's own layers (the input
    QuantizeLayer) get Keras's process-wide unique names (`quantize_layer_1` in the second QAT
    model of a process), so they are compared by class only."""
    return [(type(layer).__name__, layer.layer.name if hasattr(layer, "layer") else "")
            for layer in model.layers]


def transfer_qat_weights(source: tf_keras.Model, target: tf_keras.Model) -> None:
    """Copies weights and quantizer ranges between two QAT models of the same graph (e.g.
    trained at a crop size, exported at another).

    Raises:
      ValueError: the two graphs differ.
    """
    src, dst = source.get_weights(), target.get_weights()
    if _qat_structure(source) != _qat_structure(target) or len(src) != len(dst) or any(
            a.shape != b.shape for a, b in zip(src, dst)):
        raise ValueError("the QAT models differ in structure; train QAT at a size of the same "
                         "form as the export size (both 32k+1, or the export size itself)")
    target.set_weights(src)
