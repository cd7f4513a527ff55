r"""Structured kernel pruning: rank each conv's filters by L1 norm, keep the best, fine-tune.

As in the ICNet paper, a trained network is compressed by removing whole output filters (the
released model is the full-width net pruned to half width: `--keep 0.5` turns the
`filter_scale` 2 plan into exactly the `filter_scale` 1 plan). Filters are removed physically:
the smaller model is rebuilt by `build_icnet` from a smaller channel plan, with no masks.

Examples:
  # One shot to half width, then evaluate the result:
  python -m deploy.prune --model_dir runs/fs2 --output_dir runs/fs2_pruned --keep 0.5
  # Progressive 0.75 then 0.5 of the original widths, 200 fine-tuning steps after each stage,
  # mIoU on 20 synthetic val images and FLOPs at 1025x2049 in runs/pruned/prune_report.json:
  python -m deploy.prune --model_dir runs/fs2 --output_dir runs/pruned --schedule 0.75,0.5 \
      --finetune_steps 200 --eval_images 20 --dataset synthetic --crop_size 256x512
  # Keep conv5 at 0.6 and the full-resolution branch whole; round widths up to multiples of 8:
  python -m deploy.prune --model_dir runs/fs2 --output_dir runs/p2 --keep 0.5 \
      --keep_overrides conv5=0.6,sub1=1.0 --round_to 8
  # Target widths straight from a plan.json (ranking picks which channels survive):
  python -m deploy.prune --model_dir runs/fs2 --output_dir runs/p3 --keep_plan my_plan.json

How it works. `dependency_groups(model)` walks the Keras graph: a Conv2D opens a new channel
space (its output filters); BN, ReLU, resizes, padding and pooling pass their input's space
through; every `Add` unites its inputs' spaces (union-find). A resulting group (one residual
stream, the pyramid-pooling sum with the conv5 stream, a cascade-fusion sum, or one standalone
conv) must be pruned as a unit: the same channel indices leave its producing convs and their
BNs and the input channels of every conv that consumes it. Spaces that hold the image input or
reach a model output (the classifiers) are never pruned. A group's channels are ranked by the L1
norm of their kernels summed over its producing convs (`l1_importance`), and the top
`ceil(keep * channels)` are kept (`--round_to` rounds that up), in ascending index order.

`--keep_overrides KEY=KEEP,...` sets the keep fraction of the groups whose producing convs
match KEY: a KEY matches a conv named KEY, starting with `KEY_` or ending with `_KEY` (so
`conv5` matches `conv5_1_1x1_reduce`, ..., `conv5_4_k1`; `sub1` matches `conv1_sub1`,
`conv2_sub1`, `conv3_sub1`; a full conv name matches that conv). Keys apply left to right, a
later key winning on the groups both match; every key must match something. With
`--schedule`, an override is the keep of the last stage and scales with the schedule at the
earlier ones (conv5=0.6 with 0.75,0.5 gives 0.9 then 0.6, capped at 1).

The output directory gets a checkpoint and `plan.json` (usable by train.train --init_weights,
train.evaluate --model_dir, deploy.predict --weights, benchmarks.profile_model --model_dir),
`prune_report.json` (params and FLOPs of the BN-merged model at --export_size, and mIoU, for the
source and every stage) and, when fine-tuning, each stage's TensorBoard summaries under
`finetune/`. It is written into a temporary directory beside it and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Iterable, Mapping, Sequence

import numpy as np
import tf_keras
from absl import app, flags, logging

from icnet.checkpoint import latest_checkpoint, load_checkpoint_weights, save_model_checkpoint
from icnet.cli import parse_size
from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.data import Source
from icnet.evaluation import evaluate
from icnet.fileio import holds
from icnet.inference import load_weights
from icnet.layers import Interp, LegacyResize, Preprocess
from icnet.model import MIN_INPUT_SIZE, build_icnet
from icnet.profiling import model_profile
from icnet.training import TrainingDiverged, TrainingInterrupted, TrainOptions, train
from train.common_flags import (define_data_flags, define_training_flags, source_from_flags,
                                train_options_from_flags)
from icnet.weights import WeightDict, assign_weights

REPORT_FILENAME = "prune_report.json"
_GRAPH_SIZE = (MIN_INPUT_SIZE, MIN_INPUT_SIZE)  # weights do not depend on the input size

# Layers whose output channels are their input channels, one for one.
CHANNEL_PRESERVING = (
    tf_keras.layers.BatchNormalization, tf_keras.layers.ReLU, tf_keras.layers.Activation,
    tf_keras.layers.ZeroPadding2D, tf_keras.layers.MaxPooling2D,
    tf_keras.layers.AveragePooling2D, Interp, LegacyResize,
)
# Layers whose output is a channel space that must never be pruned (the image's channels).
FIXED_SOURCES = (tf_keras.layers.InputLayer, Preprocess)


# --------------------------------------------------------------------------------------------
# Dependency groups, derived from the graph.

@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together: one channel space after union-find.

    Attributes:
      name: the first producing conv in graph order (stable for a given builder).
      channels: the group's width.
      producers: convs whose output filters are the group's channels (sliced on axis 3).
      batch_norms: BN layers over the group's channels (every parameter sliced).
      consumers: convs reading the group's channels (kernels sliced on axis 2).
      sums: the `Add` layers that coupled the producers.
      passes: other layers the channels flow through (ReLU, resize, pad, pool).
    """

    name: str
    channels: int
    producers: tuple[str, ...]
    batch_norms: tuple[str, ...]
    consumers: tuple[str, ...]
    sums: tuple[str, ...] = ()
    passes: tuple[str, ...] = ()

    def describe(self) -> str:
        """A few readable lines: width, producers, sums and consumers."""
        lines = [f"group {self.name} ({self.channels} channels)",
                 f"  producers: {', '.join(self.producers)}"]
        if self.sums:
            lines.append(f"  sums:      {', '.join(self.sums)}")
        lines.append(f"  consumers: {', '.join(self.consumers) or '-'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        more = f" +{len(self.producers) - 1}" if len(self.producers) > 1 else ""
        return (f"ChannelGroup({self.name}{more}, {self.channels} ch, "
                f"{len(self.consumers)} consumers)")


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def add(self, item: str) -> None:
        self.parent.setdefault(item, item)

    def find(self, item: str) -> str:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def dependency_groups(model: tf_keras.Model) -> list[ChannelGroup]:
    """The prunable channel groups of a functional model, found by walking its graph.

    Conv2D layers open a channel space; CHANNEL_PRESERVING layers pass their input's space on;
    `Add` unites its inputs' spaces. Spaces holding the input (FIXED_SOURCES) or reaching a
    model output (e.g. the classifiers' logits) are not prunable and are left out.

    Args:
      model: a functional tf_keras model (e.g. from `build_icnet`).

    Returns:
      The groups, ordered by their first producer's position in the graph.

    Raises:
      ValueError: a layer whose channel behaviour is unknown, a shared (multiply called)
        layer, or a grouped/transposed convolution.
    """
    uf = _UnionFind()
    tensor_space: dict[tuple[str, int, int], str] = {}
    fixed: set[str] = set()
    members: dict[str, dict[str, list[str]]] = {}  # space -> role -> layer names
    widths: dict[str, int] = {}

    def new_space(space: str) -> str:
        uf.add(space)
        members[space] = {"producers": [], "batch_norms": [], "consumers": [], "sums": [],
                          "passes": []}
        return space

    def input_spaces(layer) -> list[str]:
        node = layer.inbound_nodes[0]
        spaces = []
        for inbound, node_index, tensor_index, _ in node.iterate_inbound():
            key = (inbound.name, node_index, tensor_index)
            if key not in tensor_space:
                raise ValueError(f"layer `{layer.name}` reads `{inbound.name}` before it is "
                                 f"visited; the model's layers are not in graph order")
            spaces.append(tensor_space[key])
        return spaces

    for layer in model.layers:
        if len(layer.inbound_nodes) != 1:
            raise ValueError(f"layer `{layer.name}` is called {len(layer.inbound_nodes)} times; "
                             f"pruning needs every layer to be used once")
        kind = type(layer).__name__
        if isinstance(layer, FIXED_SOURCES):
            space = new_space(f"fixed:{layer.name}")
            fixed.add(space)
        elif isinstance(layer, tf_keras.layers.Conv2D):
            if isinstance(layer, tf_keras.layers.Conv2DTranspose) or layer.groups != 1:
                raise ValueError(f"conv `{layer.name}` ({kind}, groups={layer.groups}) is not "
                                 f"supported by kernel pruning")
            (source,) = input_spaces(layer)
            members[uf.find(source)]["consumers"].append(layer.name)
            space = new_space(f"conv:{layer.name}")
            members[space]["producers"].append(layer.name)
            widths[space] = layer.filters
        elif isinstance(layer, CHANNEL_PRESERVING):
            (space,) = input_spaces(layer)
            role = ("batch_norms" if isinstance(layer, tf_keras.layers.BatchNormalization)
                    else "passes")
            members[uf.find(space)][role].append(layer.name)
        elif isinstance(layer, tf_keras.layers.Add):
            spaces = input_spaces(layer)
            for other in spaces[1:]:
                root, gone = uf.find(spaces[0]), uf.find(other)
                if root != gone:
                    uf.union(root, gone)  # `root` stays the root
                    for role, names in members.pop(gone).items():
                        members[root][role].extend(names)
            space = spaces[0]
            members[uf.find(space)]["sums"].append(layer.name)
        else:
            raise ValueError(f"layer `{layer.name}` ({kind}): unknown channel behaviour; "
                             f"add its type to deploy.prune.CHANNEL_PRESERVING or teach "
                             f"dependency_groups about it")
        tensor_space[(layer.name, 0, 0)] = space

    for output in model.outputs:
        history = output._keras_history  # pylint: disable=protected-access
        fixed.add(uf.find(tensor_space[(history.layer.name, history.node_index,
                                        history.tensor_index)]))
    fixed_roots = {uf.find(space) for space in fixed}

    groups = []
    for root, roles in members.items():
        if uf.find(root) != root or root in fixed_roots or not roles["producers"]:
            continue
        group_widths = {name: widths[f"conv:{name}"] for name in roles["producers"]}
        if len(set(group_widths.values())) != 1:
            raise ValueError(f"convs coupled by {roles['sums']} have different widths: "
                             f"{group_widths}")
        groups.append(ChannelGroup(
            name=roles["producers"][0], channels=next(iter(group_widths.values())),
            **{role: tuple(names) for role, names in roles.items()}))
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    return sorted(groups, key=lambda g: order[g.name])


def model_groups(config: ICNetConfig) -> list[ChannelGroup]:
    """The dependency groups of the model `config` describes."""
    return dependency_groups(build_icnet(config, _GRAPH_SIZE))


# --------------------------------------------------------------------------------------------
# Ranking and plans.


def l1_importance(weights: WeightDict, group: ChannelGroup) -> np.ndarray:
    """Per channel of `group`: the L1 norm of its kernels, summed over the producing convs."""
    total = np.zeros(group.channels, np.float64)
    for name in group.producers:
        kernel = np.asarray(weights[name]["weights"], np.float64)
        total += np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    return total


def check_keep(keep: float, what: str = "keep") -> float:
    """Returns `keep` as a float, or raises naming it when it is not in (0, 1]."""
    try:
        value = float(keep)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a fraction in (0, 1], got {keep!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{what} must be in (0, 1], got {keep!r}")
    return value


def kept_width(channels: int, keep: float, round_to: int = 1) -> int:
    """`ceil(keep * channels)`, rounded up to a multiple of `round_to`, in [1, channels]."""
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    # The small epsilon keeps e.g. 0.7 * 10 (7.000000000000001) from becoming 8.
    width = math.ceil(check_keep(keep) * channels - 1e-9)
    width = round_to * math.ceil(width / round_to)
    return max(1, min(channels, width))


def override_matches(key: str, conv: str) -> bool:
    """An override key matches a conv named `key`, starting with `key_` or ending with `_key`."""
    return conv == key or conv.startswith(f"{key}_") or conv.endswith(f"_{key}")


def group_keeps(groups: Sequence[ChannelGroup], keep: float,
                overrides: Iterable[tuple[str, float]] = ()) -> dict[str, float]:
    """The keep fraction of every group: `keep`, except where an override key matches.

    Args:
      groups: from `dependency_groups`.
      keep: the default fraction, in (0, 1].
      overrides: (key, keep) pairs applied in order (a later key wins); a key applies to every
        group with a producing conv it matches (`override_matches`).

    Raises:
      ValueError: a keep outside (0, 1] or a key that matches no prunable conv, naming it.
    """
    keep = check_keep(keep)
    keeps = {group.name: keep for group in groups}
    for key, value in overrides:
        value = check_keep(value, f"keep override {key}")
        matched = [g.name for g in groups if any(override_matches(key, p) for p in g.producers)]
        if not matched:
            raise ValueError(f"keep override key {key!r} matches no prunable conv (a key "
                             f"matches convs named KEY, KEY_* or *_KEY, e.g. conv5, sub1)")
        for name in matched:
            keeps[name] = value
    return keeps


def prune_plan(plan: Mapping[str, int], groups: Sequence[ChannelGroup],
               keep: float | Mapping[str, float], round_to: int = 1) -> dict[str, int]:
    """The plan after keeping a fraction of every group's channels.

    Args:
      plan: conv name -> width (the widths the fractions refer to).
      groups: from `dependency_groups`.
      keep: one fraction for all groups, or group name -> fraction for every group.
      round_to: round each kept width up to a multiple of this (capped at the full width).

    Returns:
      A new plan; convs outside the groups keep their width.

    Raises:
      ValueError: a keep outside (0, 1], a per-group keep missing a group or naming an unknown
        one, or a group whose convs have different widths in `plan`.
    """
    if isinstance(keep, Mapping):
        names = {group.name for group in groups}
        unknown, missing = sorted(set(keep) - names), sorted(names - set(keep))
        if unknown or missing:
            raise ValueError(f"per-group keep: unknown groups {unknown}, missing {missing}")
        keeps = {name: check_keep(value, f"keep of group {name}") for name, value in keep.items()}
    else:
        value = check_keep(keep)
        keeps = {group.name: value for group in groups}
    result = dict(plan)
    for group in groups:
        widths = {name: plan[name] for name in group.producers}
        if len(set(widths.values())) != 1:
            raise ValueError(f"group {group.name}: the plan gives its convs different widths "
                             f"{widths}")
        width = kept_width(next(iter(widths.values())), keeps[group.name], round_to)
        for name in group.producers:
            result[name] = width
    return result


def check_target_plan(plan: Mapping[str, int], groups: Sequence[ChannelGroup],
                      target: Mapping[str, int]) -> None:
    """Checks that `target` can be reached from `plan` by pruning `groups`.

    Raises:
      ValueError: naming convs whose widths differ inside a group, grow, or change outside
        every group.
    """
    problems = []
    in_groups = set()
    for group in groups:
        in_groups.update(group.producers)
        widths = {name: target[name] for name in group.producers}
        if len(set(widths.values())) != 1:
            problems.append(f"group {group.name} must have one width, got {widths}")
        grown = {n: (plan[n], w) for n, w in widths.items() if w > plan[n]}
        if grown:
            problems.append(f"group {group.name} would grow (now, target): {grown}")
    fixed = {n: (plan[n], target[n]) for n in plan if n not in in_groups and plan[n] != target[n]}
    if fixed:
        problems.append(f"convs outside every prunable group cannot change (now, target): "
                        f"{fixed}")
    if set(plan) != set(target):
        problems.append(f"target plan layers differ: {sorted(set(plan) ^ set(target))}")
    if problems:
        raise ValueError("target plan: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Surgery.


def select_channels(weights: WeightDict, groups: Sequence[ChannelGroup],
                    target: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Group name -> the indices (ascending) of its `target` width most important channels."""
    kept = {}
    for group in groups:
        width = target[group.producers[0]]
        if not 1 <= width <= group.channels:
            raise ValueError(f"group {group.name}: cannot keep {width} of {group.channels} "
                             f"channels")
        importance = l1_importance(weights, group)
        best = np.argsort(-importance, kind="stable")[:width]
        kept[group.name] = np.sort(best)
    return kept


def slice_weights(weights: WeightDict, groups: Sequence[ChannelGroup],
                  kept_indices: Mapping[str, np.ndarray]) -> WeightDict:
    """A new weight dict keeping only `kept_indices` of every group's channels.

    Producing convs lose output filters (and biases), BN layers lose parameters, consuming convs
    lose kernel input channels. `weights` is not modified.

    Raises:
      ValueError: indices that are empty, unsorted, repeated or out of range.
    """
    result = {layer: dict(params) for layer, params in weights.items()}
    for group in groups:
        if group.name not in kept_indices:
            continue
        index = np.asarray(kept_indices[group.name], np.int64)
        if (index.ndim != 1 or index.size == 0 or np.any(np.diff(index) <= 0)
                or index[0] < 0 or index[-1] >= group.channels):
            raise ValueError(f"group {group.name}: kept indices must be a non-empty ascending "
                             f"subset of range({group.channels}), got {index.tolist()}")
        for name in group.producers:
            result[name]["weights"] = result[name]["weights"][..., index]
            if "biases" in result[name]:
                result[name]["biases"] = result[name]["biases"][index]
        for name in group.batch_norms:
            result[name] = {param: value[index] for param, value in result[name].items()}
        for name in group.consumers:
            result[name]["weights"] = result[name]["weights"][:, :, index, :]
    return result


def prune(config: ICNetConfig, weights: WeightDict,
          target: Mapping[str, int]) -> tuple[ICNetConfig, WeightDict]:
    """Prunes (config, weights) to the `target` plan, keeping each group's best channels.

    The result is checked by loading it into the model `build_icnet` makes from `target`.

    Raises:
      ValueError: `target` is not reachable by pruning (see `check_target_plan`).
    """
    groups = model_groups(config)
    check_target_plan(config.plan, groups, target)
    kept = select_channels(weights, groups, target)
    pruned = slice_weights(weights, groups, kept)
    new_config = config.replace(plan=dict(target))
    assign_weights(build_icnet(new_config, _GRAPH_SIZE), pruned)
    return new_config, pruned


def save_checkpoint(config: ICNetConfig, weights: WeightDict, directory: str) -> str:
    """Writes `weights` as a tf.train.Checkpoint with plan.json beside it; returns the prefix."""
    model = build_icnet(config, _GRAPH_SIZE)
    assign_weights(model, weights)
    return save_model_checkpoint(model, config, directory)


# --------------------------------------------------------------------------------------------
# The whole job: stages, fine-tuning, measurements, atomic output.


def check_schedule(schedule: Sequence[float]) -> tuple[float, ...]:
    """Validates a keep schedule: fractions of the original widths, in (0, 1], non-increasing."""
    if not schedule:
        raise ValueError("the keep schedule is empty")
    values = tuple(check_keep(keep, f"schedule keep {keep}") for keep in schedule)
    if any(b > a for a, b in zip(values, values[1:])):
        raise ValueError(f"schedule must not increase (widths only shrink), got {list(values)}")
    return values


def _measure(config: ICNetConfig, weights: WeightDict, export_size: tuple[int, int],
             eval_source: Source | None, eval_images: int) -> dict:
    profile = model_profile(config.replace(batch_norm=False), export_size)
    result = {"params": profile["params"], "flops": profile["flops"],
              "gflops": profile["gflops"]}
    if eval_source is not None and eval_images > 0:
        result["miou"] = evaluate(config, weights, eval_source, eval_images)["miou"]
    return result


def _describe(measured: dict, export_size: tuple[int, int]) -> str:
    text = (f"{measured['params'] / 1e6:.3f}M params, {measured['gflops']:.2f} GFLOPs at "
            f"{export_size[0]}x{export_size[1]}")
    if "miou" in measured:
        text += f", mIoU {100 * measured['miou']:.2f}%"
    return text


def _drop_checkpoints(model_dir: str) -> None:
    """Removes training checkpoints from a fine-tuning dir, keeping its summaries."""
    for name in os.listdir(model_dir):
        if name == "checkpoint" or name.startswith(("ckpt-", PLAN_FILENAME)):
            os.remove(os.path.join(model_dir, name))


def prune_model_dir(model_dir: str, output_dir: str, schedule: Sequence[float] = (0.5,), *,
                    overrides: Sequence[tuple[str, float]] = (),
                    keep_plan: Mapping[str, int] | None = None, round_to: int = 1,
                    finetune: TrainOptions | None = None, train_source: Source | None = None,
                    eval_source: Source | None = None, eval_images: int = 0,
                    export_size: tuple[int, int] = (1025, 2049),
                    overwrite: bool = False) -> dict:
    """Prunes a trained model in stages and writes the result as a new model directory.

    Args:
      model_dir: the source: a model dir (checkpoint + plan.json), a checkpoint prefix or a
        reference `.npy`.
      output_dir: the new model dir (must not exist unless `overwrite`).
      schedule: keep fractions of the source's widths, one stage each (non-increasing).
      overrides: (key, keep) pairs for the last stage (see `group_keeps`); earlier stages
        scale them by `schedule[i] / schedule[-1]` (capped at 1).
      keep_plan: target widths (a plan) instead of fractions: one stage; `schedule`, `overrides`
        and `round_to` must be left at their defaults.
      round_to: round kept widths up to a multiple of this.
      finetune: training options for fine-tuning after every stage (steps per stage; its
        `model_dir` is replaced by a per-stage directory), or None for no fine-tuning.
      train_source: training data (needed with `finetune`).
      eval_source: evaluation data (needed with `eval_images` > 0).
      eval_images: images for the mIoU of the source and of each stage; 0 skips evaluation.
      export_size: (H, W) at which FLOPs are counted (BN-merged model).
      overwrite: replace an existing `output_dir`.

    Returns:
      The report written to `output_dir/prune_report.json`.

    Raises:
      FileExistsError: `output_dir` exists and not `overwrite`.
      ValueError: `output_dir` holds the source, or exists and is not a model directory
        (plan.json and a checkpoint); or a bad keep, override, plan or data source.
      FileNotFoundError: a missing source, plan or data.
    """
    output_dir = os.path.abspath(output_dir)
    if holds(output_dir, model_dir):
        raise ValueError(f"--output_dir {output_dir} would replace the source model "
                         f"{model_dir}; choose another --output_dir")
    if os.path.lexists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} exists; choose another --output_dir or pass "
                              f"--overwrite")
    if os.path.lexists(output_dir) and (not os.path.isdir(output_dir)
                                        or os.path.islink(output_dir)):
        raise ValueError(f"--output_dir {output_dir} is not a directory; --overwrite replaces "
                         f"only model directories")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not (
            os.path.isfile(os.path.join(output_dir, PLAN_FILENAME))
            and latest_checkpoint(output_dir)):
        raise ValueError(f"--output_dir {output_dir} is not a model directory (no "
                         f"{PLAN_FILENAME} with a checkpoint); --overwrite replaces only model "
                         f"directories")
    schedule = check_schedule(schedule)
    if keep_plan is not None and (len(schedule) > 1 or overrides or round_to != 1):
        raise ValueError("a keep plan gives the widths directly: do not combine it with a "
                         "schedule, keep overrides or round_to")
    if finetune is not None and train_source is None:
        raise ValueError("fine-tuning needs a training data source")
    if eval_images < 0:
        raise ValueError(f"eval_images must be >= 0, got {eval_images}")
    if eval_images > 0 and eval_source is None:
        raise ValueError("evaluation needs a validation data source")

    config, weights = load_weights(model_dir)
    for what, source in (("training", train_source if finetune else None),
                         ("evaluation", eval_source if eval_images > 0 else None)):
        if source is not None and source.num_classes != config.num_classes:
            raise ValueError(f"the {what} data has {source.num_classes} classes, the model "
                             f"{config.num_classes}")
    original = config.plan
    groups = model_groups(config)
    coupled = [group for group in groups if len(group.producers) > 1]
    logging.info("%s: %d prunable channel groups: %d standalone convs and %d coupled groups:\n%s",
                 model_dir, len(groups), len(groups) - len(coupled), len(coupled),
                 "\n".join(group.describe() for group in coupled))
    # Resolve every stage's target plan up front, so bad keys fail before any work.
    if keep_plan is not None:
        check_target_plan(original, groups, keep_plan)
        targets = [("plan", dict(keep_plan), None)]
    else:
        targets = []
        for keep in schedule:
            scaled = [(key, min(1.0, check_keep(value, f"keep override {key}") * keep
                                / schedule[-1])) for key, value in overrides]
            keeps = group_keeps(groups, keep, scaled)
            targets.append((keep, prune_plan(original, groups, keeps, round_to),
                            dict(scaled) or None))
        for key, _ in overrides:
            matched = [g.name for g in groups if any(override_matches(key, p)
                                                     for p in g.producers)]
            logging.info("keep override %s applies to groups %s", key, ", ".join(matched))

    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.", suffix=".tmp",
                            dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp's 0700 would otherwise become the output's mode
    try:
        report = {"source": model_dir, "export_size": list(export_size),
                  "num_classes": config.num_classes, "eval_images": eval_images,
                  "finetune_steps": finetune.steps if finetune else 0, "round_to": round_to}
        report["original"] = _measure(config, weights, export_size, eval_source, eval_images)
        logging.info("source: %s", _describe(report["original"], export_size))
        stages = []
        for number, (keep, target, stage_overrides) in enumerate(targets, 1):
            begin = time.time()
            logging.info("stage %d/%d: keep %s%s", number, len(targets), keep,
                         f" with overrides {stage_overrides}" if stage_overrides else "")
            config, weights = prune(config, weights, target)
            stage = {"stage": number, "keep": keep, "overrides": stage_overrides}
            if finetune is not None:
                if eval_images > 0:
                    stage["miou_before_finetune"] = evaluate(
                        config, weights, eval_source, eval_images)["miou"]
                stage_dir = os.path.join(work, "finetune", f"stage_{number}")
                options = dataclasses.replace(finetune, model_dir=stage_dir)
                logging.info("stage %d/%d: fine-tuning %d steps in %s", number, len(targets),
                             options.steps, stage_dir)
                summary = train(options, config, train_source,
                                init_weights=(weights, f"stage {number} pruned weights"))
                config, weights = load_checkpoint_weights(stage_dir)
                _drop_checkpoints(stage_dir)
                stage["finetune"] = {"steps": summary["step"], "losses": summary["losses"],
                                     "seconds": summary["seconds"]}
            stage.update(_measure(config, weights, export_size, eval_source, eval_images))
            stage["seconds"] = round(time.time() - begin, 1)
            stage["plan"] = dict(config.plan)
            logging.info("stage %d/%d done: %s (x%.2f FLOPs of the source)", number,
                         len(targets), _describe(stage, export_size),
                         stage["flops"] / report["original"]["flops"])
            stages.append(stage)
        report["stages"] = stages
        report["checkpoint"] = os.path.basename(save_checkpoint(config, weights, work))
        with open(os.path.join(work, REPORT_FILENAME), "w") as f:
            json.dump(report, f, indent=1)
        _move_into_place(work, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logging.info("wrote %s", output_dir)
    report["output"] = output_dir
    return report


def _move_into_place(work: str, output_dir: str, overwrite: bool) -> None:
    if not os.path.exists(output_dir):
        os.rename(work, output_dir)
        return
    if not overwrite:
        raise FileExistsError(f"{output_dir} appeared while pruning; not overwriting it")
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.", suffix=".old",
                           dir=os.path.dirname(output_dir))
    os.rename(output_dir, os.path.join(old, "previous"))
    os.rename(work, output_dir)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Parsing helpers for the binary.


def parse_fractions(text: str, flag: str) -> tuple[float, ...]:
    """`0.75,0.5` -> (0.75, 0.5), naming `flag` in errors."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--{flag}: expected comma-separated fractions such as 0.75,0.5, "
                         f"got {text!r}") from None


def parse_overrides(text: str) -> list[tuple[str, float]]:
    """`conv5=0.6,sub1=1.0` -> [("conv5", 0.6), ("sub1", 1.0)]."""
    result = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            keep = float(value)
        except ValueError:
            raise ValueError(f"--keep_overrides: expected KEY=KEEP items such as conv5=0.6, "
                             f"got {item!r}") from None
        result.append((key.strip(), check_keep(keep, f"--keep_overrides {key.strip()}")))
    return result


# --------------------------------------------------------------------------------------------
# The binary.


def define_flags() -> None:
    """Defines the binary's flags (only when run as a binary, so that importing this module
    beside other binaries, e.g. in tests, defines no clashing flags)."""
    flags.DEFINE_string("model_dir", None, "Source model dir (checkpoint + plan.json), checkpoint "
                        "prefix or reference .npy.")
    flags.DEFINE_string("output_dir", None, "New model dir for the pruned model (must not exist).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir (only a model "
                      "directory, never the source model).")
    flags.DEFINE_float("keep", None, "Fraction of every group's channels to keep, one shot "
                       "(default 0.5 unless --schedule or --keep_plan).")
    flags.DEFINE_string("schedule", None,
                        "Progressive keeps of the ORIGINAL widths, e.g. 0.75,0.5.")
    flags.DEFINE_string("keep_overrides", None, "Per-stage-prefix keeps, e.g. conv5=0.6,sub1=1.0.")
    flags.DEFINE_string("keep_plan", None, "A plan.json with the target widths.")
    flags.DEFINE_integer("round_to", 1, "Round kept widths up to a multiple of this (1: off).")
    flags.DEFINE_integer("finetune_steps", 0, "Training steps after each stage (0: none).")
    flags.DEFINE_integer("eval_images", 0, "Val images for the mIoU of each stage (0: none).")
    flags.DEFINE_string("export_size", "1025x2049", "HxW at which FLOPs are reported.")
    # Dataset and training flags, as train.train names them.
    define_data_flags()
    define_training_flags(learning_rate=5e-4)


FLAGS = flags.FLAGS


def schedule_from_flags() -> tuple[tuple[float, ...], dict[str, int] | None,
                                   list[tuple[str, float]]]:
    """(schedule, keep_plan, overrides) from --keep, --schedule, --keep_plan, --keep_overrides."""
    given = [name for name in ("keep", "schedule", "keep_plan")
             if getattr(FLAGS, name) is not None]
    if len(given) > 1:
        raise ValueError(f"give one of --keep, --schedule and --keep_plan, not "
                         f"{' and '.join('--' + n for n in given)}")
    keep_plan = None
    if FLAGS.keep_plan:
        keep_plan = ICNetConfig.load(FLAGS.keep_plan).plan
        schedule = (1.0,)
    elif FLAGS.schedule is not None:
        schedule = parse_fractions(FLAGS.schedule, "schedule")
    else:
        schedule = (FLAGS.keep if FLAGS.keep is not None else 0.5,)
    for keep in schedule:
        check_keep(keep, "--keep" if FLAGS.keep is not None else "--schedule keep")
    overrides = parse_overrides(FLAGS.keep_overrides) if FLAGS.keep_overrides else []
    return tuple(schedule), keep_plan, overrides


def main(argv):
    del argv
    try:
        for name in ("model_dir", "output_dir"):
            if not getattr(FLAGS, name):
                raise ValueError(f"--{name} is required")
        schedule, keep_plan, overrides = schedule_from_flags()
        export_size = parse_size(FLAGS.export_size, "export_size", MIN_INPUT_SIZE)
        tf_keras.utils.set_random_seed(FLAGS.seed)
        finetune = train_source = eval_source = None
        if FLAGS.finetune_steps > 0:
            train_source = source_from_flags("train")
            finetune = train_options_from_flags("", FLAGS.finetune_steps, train_source)
        elif FLAGS.finetune_steps < 0:
            raise ValueError(f"--finetune_steps must be >= 0, got {FLAGS.finetune_steps}")
        if FLAGS.eval_images > 0:
            eval_source = source_from_flags("val")
        report = prune_model_dir(
            FLAGS.model_dir, FLAGS.output_dir, schedule, overrides=overrides,
            keep_plan=keep_plan, round_to=FLAGS.round_to, finetune=finetune,
            train_source=train_source, eval_source=eval_source, eval_images=FLAGS.eval_images,
            export_size=export_size, overwrite=FLAGS.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        sys.exit(f"error: {e}")
    except (TrainingDiverged, TrainingInterrupted) as e:
        logging.error("%s (nothing was written to %s)", e, FLAGS.output_dir)
        sys.exit(1)
    last = report["stages"][-1]
    print(json.dumps({"output_dir": report["output"], "params": last["params"],
                      "gflops": last["gflops"], "miou": last.get("miou")}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
