"""The reference `.npy` weight format: a safe reader, a writer, model transfer and BN folding.

A reference file is a NumPy `.npy` holding a 0-d object array whose item is
`{layer_name: {param: ndarray}}`, pickled (by Python 2 for the released files). Conv params are
`weights` [kh, kw, cin, cout] and `biases` [cout]; BN layers (`<conv>_bn`) hold `mean`,
`variance`, `scale` and `offset`. The reader never executes pickled code: its unpickler admits
only the few NumPy globals needed to rebuild plain arrays.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import tf_keras

from icnet.config import CLASSIFIERS, REFERENCE_WIDTHS, ICNetConfig
from icnet.fileio import atomic_write_bytes
from icnet.model import BN_EPSILON, MIN_INPUT_SIZE, build_icnet

WeightDict = dict[str, dict[str, np.ndarray]]

CONV_PARAMS = ("weights", "biases")
_BN_KERAS_ORDER = ("scale", "offset", "mean", "variance")  # gamma, beta, moving mean/var
_HEADS = ("sub4_out", "sub24_out")

# The only globals a plain-array pickle needs, for NumPy 1.x and 2.x writers (`_codecs.encode`
# turns text into bytes in protocol-2 pickles written by Python 3).
_SAFE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class UnsafeWeightsError(ValueError):
    """A weight file's pickle asks for something other than plain arrays."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise UnsafeWeightsError(
                f"{self._source}: refused to load: the pickle references `{module}.{name}`; "
                f"only plain NumPy arrays, dicts, lists, strings and numbers are allowed")
        return super().find_class(module, name)


def _check_weight_dict(obj, source: str) -> WeightDict:
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict of layers, got {type(obj).__name__}")
    for layer, params in obj.items():
        if not isinstance(layer, str) or not isinstance(params, dict):
            raise ValueError(f"{source}: layer {layer!r} is not a dict of parameters")
        for param, value in params.items():
            if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
                raise ValueError(f"{source}: {layer}/{param} is not a numeric array")
    return obj


def load_npy_weights(path: str) -> WeightDict:
    """Reads a reference `.npy` weight file without executing any pickled code.

    Raises:
      FileNotFoundError: no such file.
      UnsafeWeightsError: the pickle references anything but plain NumPy arrays.
      ValueError: not a `.npy` file, or not a `{layer: {param: array}}` dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a NumPy .npy file ({e})") from e
        if dtype.hasobject:
            array = _ArrayOnlyUnpickler(f, path).load()
        else:
            raise ValueError(f"{path}: holds a plain {dtype} array of shape {shape}, "
                             f"not a dict of layers")
    if isinstance(array, np.ndarray) and array.dtype == object and array.shape == ():
        array = array.item()
    return _check_weight_dict(array, path)


def save_npy_weights(weights: WeightDict, path: str) -> None:
    """Writes `weights` in the reference format (pickle protocol 2), atomically."""
    holder = np.empty((), dtype=object)
    holder[()] = {layer: {p: np.asarray(v) for p, v in params.items()}
                  for layer, params in weights.items()}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|O", "fortran_order": False, "shape": ()})
    pickle.dump(holder, buffer, protocol=2)
    atomic_write_bytes(path, buffer.getvalue())


def config_from_weights(weights: WeightDict, source: str = "weights") -> ICNetConfig:
    """Infers class count, channel plan and BN variant from a weight dict's shapes.

    Raises:
      ValueError: a layer of the network, or its 4-D conv kernel `weights`, is missing
        (the message starts with `source`).
    """
    needed = [*REFERENCE_WIDTHS, "conv6_cls"]
    missing = [name for name in needed if name not in weights]
    if missing:
        raise ValueError(f"{source}: lacks layers {missing[:5]}{'...' if len(missing) > 5 else ''}")
    no_kernel = [name for name in needed if np.ndim(weights[name].get("weights")) != 4]
    if no_kernel:
        raise ValueError(f"{source}: layers without a 4-D conv kernel 'weights': {no_kernel[:5]}")
    plan = {name: int(weights[name]["weights"].shape[-1]) for name in REFERENCE_WIDTHS}
    batch_norm = any(name.endswith("_bn") for name in weights)
    return ICNetConfig(int(weights["conv6_cls"]["weights"].shape[-1]), plan, batch_norm)


def model_weights(model: tf_keras.Model) -> WeightDict:
    """Extracts a model's variables as a reference weight dict."""
    weights: WeightDict = {}
    for layer in model.layers:
        values = layer.get_weights()
        if isinstance(layer, tf_keras.layers.Conv2D):
            weights[layer.name] = dict(zip(CONV_PARAMS, values))
        elif isinstance(layer, tf_keras.layers.BatchNormalization):
            weights[layer.name] = dict(zip(_BN_KERAS_ORDER, values))
    return weights


def initial_weights(config: ICNetConfig, seed: int = 0) -> WeightDict:
    """Seeded, freshly initialised weights of `config`: for timing a plan, whose latency does
    not depend on its weights (and whose pruned trained weights may be degenerate)."""
    tf_keras.utils.set_random_seed(seed)
    return model_weights(build_icnet(config, (MIN_INPUT_SIZE, MIN_INPUT_SIZE)))


MAX_LISTED_PROBLEMS = 10


def assign_weights(model: tf_keras.Model, weights: WeightDict,
                   allow_missing_classifier: bool = False) -> None:
    """Loads a reference weight dict into `model`, checking every layer by name.

    Args:
      model: a model from `build_icnet`.
      weights: `{layer: {param: array}}` in the reference layout.
      allow_missing_classifier: keep the model's own classifier weights where the file's
        classifiers are absent or of another class count (fine-tuning on new classes).

    Raises:
      ValueError: naming every missing, unexpected or wrongly shaped layer.
    """
    expected = model_weights(model)
    skip = set(CLASSIFIERS) if allow_missing_classifier else set()
    problems = []
    for name in sorted(set(weights) - set(expected)):
        problems.append(f"unexpected layer `{name}`")
    for name, params in expected.items():
        if name not in weights:
            if name not in skip:
                problems.append(f"missing layer `{name}`")
            continue
        if set(weights[name]) != set(params):
            problems.append(f"layer `{name}` has params {sorted(weights[name])}, "
                            f"expected {sorted(params)}")
            continue
        for param, value in params.items():
            if weights[name][param].shape != value.shape and name not in skip:
                problems.append(f"layer `{name}` {param}: shape "
                                f"{weights[name][param].shape}, expected {value.shape}")
    if problems:
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise ValueError(f"weights do not match the model ({len(problems)} problems):\n  "
                         + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else ""))
    for layer in model.layers:
        name = layer.name
        if name not in expected or name not in weights:
            continue
        order = CONV_PARAMS if isinstance(layer, tf_keras.layers.Conv2D) else _BN_KERAS_ORDER
        values = [weights[name][p] for p in order if p in expected[name]]
        if all(v.shape == e.shape for v, e in zip(values, layer.get_weights())):
            layer.set_weights(values)


def fold_batch_norm(weights: WeightDict, epsilon: float = BN_EPSILON) -> WeightDict:
    """Folds every `<conv>_bn` into its conv's kernel and bias (BN variant -> merged variant).

    The training heads (`sub4_out`, `sub24_out`) are dropped: the merged variant has none.
    """
    folded: WeightDict = {}
    for name, params in weights.items():
        if name.endswith("_bn") or name in _HEADS:
            continue
        kernel = params["weights"].astype(np.float64)
        bias = params.get("biases", np.zeros(kernel.shape[-1])).astype(np.float64)
        bn = weights.get(f"{name}_bn")
        if bn is not None:
            scale = bn["scale"] / np.sqrt(bn["variance"].astype(np.float64) + epsilon)
            kernel = kernel * scale
            bias = (bias - bn["mean"]) * scale + bn["offset"]
        folded[name] = {"weights": kernel.astype(np.float32), "biases": bias.astype(np.float32)}
    return folded


def expand_batch_norm(weights: WeightDict, epsilon: float = BN_EPSILON) -> WeightDict:
    """Merged-variant weights as BN-variant weights whose BN layers are the identity.

    The inverse of `fold_batch_norm` up to float rounding: each conv keeps its kernel, and its
    bias moves to the BN offset (scale 1, mean 0, variance 1 - epsilon). Lets a released
    BN-merged file initialise training.
    """
    expanded: WeightDict = {}
    for name, params in weights.items():
        if name in CLASSIFIERS:
            expanded[name] = dict(params)
            continue
        width = params["weights"].shape[-1]
        expanded[name] = {"weights": params["weights"]}
        expanded[f"{name}_bn"] = {
            "scale": np.ones(width, np.float32),
            "offset": params.get("biases", np.zeros(width, np.float32)),
            "mean": np.zeros(width, np.float32),
            "variance": np.full(width, 1.0 - epsilon, np.float32),
        }
    return expanded
