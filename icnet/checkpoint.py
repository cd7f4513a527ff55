"""Checkpoints: a model's layers by name in a tf.train.Checkpoint, with plan.json beside it.

Layers are tracked by their reference names, not by their position in the model, so a
checkpoint written by a model built for one input size restores into one built for another
(other sizes insert weightless resize layers, which reorders `model.layers`).
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras

from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.model import MIN_INPUT_SIZE, build_icnet
from icnet.weights import WeightDict, model_weights

# Any size builds the same variables; a small one keeps restoring cheap.
_RESTORE_SIZE = (MIN_INPUT_SIZE, MIN_INPUT_SIZE)


def latest_checkpoint(path: str) -> str | None:
    """The newest checkpoint prefix in a model dir, or `path` itself if it is a prefix."""
    if os.path.isdir(path):
        return tf.train.latest_checkpoint(path)
    return path if tf.io.gfile.exists(path + ".index") else None


def model_dir_of(path: str) -> str:
    return path if os.path.isdir(path) else os.path.dirname(path)


def load_plan(model_dir: str) -> ICNetConfig:
    """The model config saved beside a checkpoint, with a clear error if it is missing."""
    plan_path = os.path.join(model_dir, PLAN_FILENAME)
    if not os.path.isfile(plan_path):
        raise FileNotFoundError(f"{model_dir}: no {PLAN_FILENAME}; not a model directory "
                                f"written by train.train or deploy.prune")
    return ICNetConfig.load(plan_path)


def select_plan(model_dir: str | None, plan_file: str | None, filter_scale: float,
                num_classes: int) -> tuple[ICNetConfig, str]:
    """The config of a model directory, else of a plan.json, else the reference plan, with
    where it came from (the directory, the file or `filter_scale=S`).

    Raises:
      FileNotFoundError, ValueError: a missing or invalid plan, or both a directory and a file.
    """
    if model_dir and plan_file:
        raise ValueError("give --model or --plan, not both")
    if model_dir:
        return load_plan(model_dir), model_dir
    if plan_file:
        return ICNetConfig.load(plan_file), plan_file
    return (ICNetConfig.from_filter_scale(filter_scale, num_classes),
            f"filter_scale={filter_scale:g}")


def checkpoint_for(model: tf_keras.Model, **extra) -> tf.train.Checkpoint:
    """A checkpoint tracking every layer with weights by name (plus `extra`, e.g. optimizer)."""
    return tf.train.Checkpoint(layers={layer.name: layer for layer in model.layers
                                       if layer.weights}, **extra)


def save_model_checkpoint(model: tf_keras.Model, config: ICNetConfig, directory: str) -> str:
    """Writes the model's weights and its plan.json into `directory`; returns the prefix."""
    config.save(os.path.join(directory, PLAN_FILENAME))
    return checkpoint_for(model).save(os.path.join(directory, "ckpt"))


def restore_into(model: tf_keras.Model, path: str) -> str:
    """Restores a checkpoint's model variables into `model`; returns the prefix used."""
    prefix = latest_checkpoint(path)
    if prefix is None:
        raise FileNotFoundError(f"{path}: no checkpoint found")
    try:
        status = checkpoint_for(model).restore(prefix)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(f"{prefix}: checkpoint does not match its {PLAN_FILENAME}: {e}") from e
    except (tf.errors.OpError, IndexError) as e:  # a truncated or missing data shard
        raise ValueError(f"{prefix}: checkpoint is damaged or incomplete: "
                         f"{type(e).__name__}: {e}") from e
    return prefix


def load_checkpoint_weights(path: str) -> tuple[ICNetConfig, WeightDict]:
    """Reads a training checkpoint (model dir or prefix) into (config, reference weight dict)."""
    if latest_checkpoint(path) is None:
        raise FileNotFoundError(f"{path}: not a .npy file, a model directory with a checkpoint "
                                f"or a checkpoint prefix")
    config = load_plan(model_dir_of(path))
    model = build_icnet(config, _RESTORE_SIZE)
    restore_into(model, path)
    return config, model_weights(model)
