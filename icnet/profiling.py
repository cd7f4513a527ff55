"""Model size and cost: parameter count and FLOPs (TF profiler; a multiply-add counts 2)."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from icnet.config import ICNetConfig
from icnet.model import build_icnet


def count_flops(model: Callable, input_size: tuple[int, int]) -> int:
    """Float operations of one forward pass of a batch-1 image, as the TF profiler counts them."""
    forward = tf.function(lambda images: model(images, training=False))
    concrete = forward.get_concrete_function(
        tf.TensorSpec([1, *input_size, 3], tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build())
    profile = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(),
                                            cmd="op", options=options)
    return int(profile.total_float_ops)


def model_profile(config: ICNetConfig, input_size: tuple[int, int]) -> dict:
    """Parameters (every variable, BN statistics included) and FLOPs of `config` at a size."""
    model = build_icnet(config, input_size)
    flops = count_flops(model, input_size)
    return {
        "params": int(model.count_params()),
        "flops": flops,
        "gflops": round(flops / 1e9, 3),
        "input_size": list(input_size),
        "num_classes": config.num_classes,
        "batch_norm": config.batch_norm,
    }
