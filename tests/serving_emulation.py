"""What TF Serving does with a SavedModel's extras, for tests without a TF Serving binary:
reading the warmup file and turning a REST predict body into signature inputs."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf


def read_warmup(path: str) -> list:
    """The PredictRequests of a warmup file (each record parsed as a PredictionLog)."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if not log.HasField("predict_log"):
            raise ValueError(f"{path}: a record is not a predict log")
        requests.append(log.predict_log.request)
    return requests


def _rest_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ValueError(f"a JSON object in a request must be {{\"b64\": ...}}, got keys "
                             f"{sorted(value)}")
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_rest_value(item) for item in value]
    return value


def rest_inputs(body: Mapping, input_specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """Turns a TF Serving REST predict body into signature inputs, as the server does.

    Supports the row format (`{"instances": [...]}`: one item per batch element, a bare value
    for single-input signatures or an object of named inputs) and the columnar format
    (`{"inputs": ...}`); `{"b64": ...}` objects hold binary strings.

    Args:
      body: the parsed JSON body.
      input_specs: the signature's inputs by name
        (`concrete_function.structured_input_signature[1]`).

    Raises:
      ValueError: a malformed body or one whose inputs do not match the signature.
    """
    names = sorted(input_specs)
    if ("instances" in body) == ("inputs" in body):
        raise ValueError('a predict body needs exactly one of "instances" and "inputs"')
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise ValueError('"instances" must be a non-empty list')
        if len(names) == 1 and not (isinstance(instances[0], dict)
                                    and set(instances[0]) == set(names)):
            columns = {names[0]: [_rest_value(item) for item in instances]}
        else:
            columns = {name: [_rest_value(item[name]) for item in instances] for name in names}
    else:
        inputs = body["inputs"]
        columns = ({name: _rest_value(inputs[name]) for name in names}
                   if isinstance(inputs, dict) and set(inputs) == set(names)
                   else {names[0]: _rest_value(inputs)})
    result = {}
    for name, value in columns.items():
        spec = input_specs[name]
        if spec.dtype == tf.string:
            array = np.array(value, dtype=object)
        else:
            array = np.asarray(value)
            if array.dtype.kind not in "iuf":
                raise ValueError(f"input {name}: expected numbers, got {array.dtype}")
            array = array.astype(spec.dtype.as_numpy_dtype)
        if not spec.shape.is_compatible_with(array.shape):
            raise ValueError(f"input {name}: shape {list(array.shape)} does not match the "
                             f"signature's {spec.shape}")
        result[name] = array
    return result
