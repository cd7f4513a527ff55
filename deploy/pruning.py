"""Structured kernel pruning, pure: channel groups from the graph, importance, plans, surgery.

As in the ICNet paper, a trained network is compressed by removing whole output filters (the
released model is the full-width net pruned to half width: keep 0.5 turns the `filter_scale`
2 plan into exactly the `filter_scale` 1 plan). Filters are removed physically: the smaller
model is rebuilt by `build_icnet` from a smaller channel plan, with no masks.

`dependency_groups(model)` walks the Keras graph: a Conv2D opens a new channel space (its
output filters); BN, ReLU, resizes, padding and pooling pass their input's space through;
every `Add` unites its inputs' spaces (union-find). A resulting group (one residual stream, the
pyramid-pooling sum with the conv5 stream, a cascade-fusion sum, or one standalone conv) is
pruned as a unit: the same channel indices leave its producing convs and their BNs and the
input channels of every conv that consumes it. Spaces that hold the image input or reach a
model output (the classifiers) are never pruned. A group's channels are ranked by an
importance criterion over its members (CRITERIA: `l1`, the paper's, the L1 norm of their
kernels summed over the producing convs; `l2`; `bn_scale`, the BN gammas as in network
slimming; `taylor`, first-order Taylor scores of the loss; `random`, the control), and the top
`ceil(keep * channels)` are kept (`round_to` rounds that up), in ascending index order.

Keep overrides `KEY=KEEP` set the keep fraction of the groups whose producing convs match KEY:
a KEY matches a conv named KEY, starting with `KEY_` or ending with `_KEY` (so `conv5` matches
`conv5_1_1x1_reduce`, ..., `conv5_4_k1`; `sub1` matches `conv1_sub1`, `conv2_sub1`,
`conv3_sub1`; a full conv name matches that conv). Keys apply left to right, a later key
winning on the groups both match; every key must match something.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import tf_keras

from icnet.checkpoint import save_model_checkpoint
from icnet.config import ICNetConfig
from icnet.exits import OptionError
from icnet.layers import Interp, LegacyResize, Preprocess
from icnet.model import MIN_INPUT_SIZE, build_icnet
from icnet.weights import WeightDict, assign_weights

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
    """The dependency groups of the model `config` describes (built once per config: a
    sensitivity scan prunes the same source once per group)."""
    return list(_model_groups(config.num_classes, config.batch_norm,
                              tuple(sorted(config.plan.items()))))


@functools.lru_cache(maxsize=16)
def _model_groups(num_classes: int, batch_norm: bool,
                  plan: tuple[tuple[str, int], ...]) -> tuple[ChannelGroup, ...]:
    config = ICNetConfig(num_classes, dict(plan), batch_norm)
    return tuple(dependency_groups(build_icnet(config, _GRAPH_SIZE)))


# --------------------------------------------------------------------------------------------
# Ranking and plans.


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What a criterion may use beyond the weights.

    Attributes:
      taylor: conv name -> per-channel first-order Taylor scores of its output (see
        deploy.taylor), for the `taylor` criterion.
      seed: the `random` criterion's seed.
    """

    taylor: Mapping[str, np.ndarray] | None = None
    seed: int = 0


def _kernel_norms(weights: WeightDict, group: ChannelGroup, order: int) -> np.ndarray:
    total = np.zeros(group.channels, np.float64)
    for name in group.producers:
        kernel = np.asarray(weights[name]["weights"], np.float64).reshape(
            -1, group.channels)
        total += (np.abs(kernel) ** order).sum(axis=0) ** (1 / order)
    return total


def l1_importance(weights: WeightDict, group: ChannelGroup,
                  evidence: Evidence = Evidence()) -> np.ndarray:
    """The paper's criterion: the L1 norm of each channel's kernels, summed over the group's
    producing convs."""
    return _kernel_norms(weights, group, 1)


def l2_importance(weights: WeightDict, group: ChannelGroup,
                  evidence: Evidence = Evidence()) -> np.ndarray:
    """The L2 norm of each channel's kernels, summed over the producing convs."""
    return _kernel_norms(weights, group, 2)


def bn_scale_importance(weights: WeightDict, group: ChannelGroup,
                        evidence: Evidence = Evidence()) -> np.ndarray:
    """Network slimming's criterion: |gamma| of the BN after each producing conv, summed.

    Raises:
      ValueError: the model has no BN layers (a BN-merged .npy).
    """
    if not group.batch_norms:
        raise OptionError("criterion", f"bn_scale needs the BN variant of the model (group "
                                       f"{group.name} has no BN layers: a BN-merged .npy?)")
    return sum(np.abs(np.asarray(weights[name]["scale"], np.float64))
               for name in group.batch_norms)


def taylor_importance(weights: WeightDict, group: ChannelGroup,
                      evidence: Evidence = Evidence()) -> np.ndarray:
    """First-order Taylor expansion of the loss (Molchanov et al.): per channel |mean of
    activation x gradient| over a few training batches, summed over the producing convs."""
    if evidence.taylor is None:
        raise ValueError("the taylor criterion needs Taylor scores (deploy.taylor)")
    return sum(np.asarray(evidence.taylor[name], np.float64) for name in group.producers)


def random_importance(weights: WeightDict, group: ChannelGroup,
                      evidence: Evidence = Evidence()) -> np.ndarray:
    """The control: a random ranking, the same for the same seed and group."""
    key = int.from_bytes(group.name.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng([evidence.seed, key, group.channels]).random(group.channels)


# Importance criteria by name: function(weights, group, evidence) -> one score per channel
# of the group (the highest are kept).
CRITERIA = {"l1": l1_importance, "l2": l2_importance, "bn_scale": bn_scale_importance,
            "taylor": taylor_importance, "random": random_importance}


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
                    target: Mapping[str, int], criterion: str = "l1",
                    evidence: Evidence = Evidence()) -> dict[str, np.ndarray]:
    """Group name -> the indices (ascending) of its `target` width most important channels.

    Raises:
      OptionError: an unknown criterion.
      ValueError: a width outside [1, the group's channels].
    """
    if criterion not in CRITERIA:
        raise OptionError("criterion", f"unknown {criterion!r}; choose from "
                                       f"{', '.join(CRITERIA)}")
    kept = {}
    for group in groups:
        width = target[group.producers[0]]
        if not 1 <= width <= group.channels:
            raise ValueError(f"group {group.name}: cannot keep {width} of {group.channels} "
                             f"channels")
        if width == group.channels:
            kept[group.name] = np.arange(width)
            continue
        importance = CRITERIA[criterion](weights, group, evidence)
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


def mask_weights(weights: WeightDict, groups: Sequence[ChannelGroup],
                 kept_indices: Mapping[str, np.ndarray]) -> WeightDict:
    """A new weight dict of the same shapes in which every group's channels outside
    `kept_indices` are exactly zero where they are produced: the producing convs' filters and
    biases, and the BN scales and offsets. A zero channel stays zero through the sums, ReLUs,
    resizes, pads and pools a group's channels pass, so consumers see what the model
    `slice_weights` prunes computes: its outputs, without building it. `weights` is not
    modified."""
    result = {layer: dict(params) for layer, params in weights.items()}
    for group in groups:
        if group.name not in kept_indices:
            continue
        removed = np.ones(group.channels, bool)
        removed[np.asarray(kept_indices[group.name], np.int64)] = False
        for name in group.producers:
            result[name]["weights"] = np.where(removed, 0, result[name]["weights"])
            if "biases" in result[name]:
                result[name]["biases"] = np.where(removed, 0, result[name]["biases"])
        for name in group.batch_norms:
            for param in ("scale", "offset"):
                result[name][param] = np.where(removed, 0, result[name][param])
    return result


def prune(config: ICNetConfig, weights: WeightDict, target: Mapping[str, int],
          criterion: str = "l1", evidence: Evidence = Evidence()
          ) -> tuple[ICNetConfig, WeightDict]:
    """Prunes (config, weights) to the `target` plan, keeping each group's best channels by
    `criterion`.

    The result is checked by loading it into the model `build_icnet` makes from `target`.

    Raises:
      ValueError: `target` is not reachable by pruning (see `check_target_plan`).
    """
    groups = model_groups(config)
    check_target_plan(config.plan, groups, target)
    kept = select_channels(weights, groups, target, criterion, evidence)
    pruned = slice_weights(weights, groups, kept)
    new_config = config.replace(plan=dict(target))
    assign_weights(build_icnet(new_config, _GRAPH_SIZE), pruned)
    return new_config, pruned


@dataclasses.dataclass(frozen=True)
class ConvSite:
    """One convolution of the BN-merged model as pruning sees it.

    Attributes:
      name: the layer.
      spec: its shape apart from the channels: input_hw, kernel, stride, dilation, padding.
      inputs, outputs: the plan key (a group's first producing conv) its input or output
        channels follow, or the fixed width where no group owns them.
      area: output pixels times kernel area (FLOPs = 2 x area x inputs x outputs).
    """

    name: str
    spec: dict
    inputs: str | int
    outputs: str | int
    area: int


def conv_sites(config: ICNetConfig, input_size: tuple[int, int]) -> list[ConvSite]:
    """Every convolution of `config`'s BN-merged model at `input_size`, in graph order."""
    model = build_icnet(config.replace(batch_norm=False), input_size)
    groups = model_groups(config)
    consumed = {c: g.producers[0] for g in groups for c in g.consumers}
    produced = {p: g.producers[0] for g in groups for p in g.producers}
    sites = []
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            spec = {"input_hw": [int(n) for n in layer.input.shape[1:3]],
                    "kernel": layer.kernel_size[0], "stride": layer.strides[0],
                    "dilation": layer.dilation_rate[0], "padding": layer.padding}
            sites.append(ConvSite(layer.name, spec,
                                  consumed.get(layer.name, int(layer.input.shape[-1])),
                                  produced.get(layer.name, layer.filters),
                                  height * width * layer.kernel_size[0] * layer.kernel_size[1]))
    return sites


class PlanCost:
    """FLOPs of any plan reachable from `config` by pruning, at an input size, counted from
    the conv shapes (2 x multiply-adds of every convolution; the rest of the graph adds about
    3% to the TF profiler's count), without building a model per plan."""

    def __init__(self, config: ICNetConfig, input_size: tuple[int, int]):
        self.sites = conv_sites(config, input_size)

    def flops(self, plan: Mapping[str, int]) -> int:
        total = 0
        for site in self.sites:
            inputs = plan[site.inputs] if isinstance(site.inputs, str) else site.inputs
            outputs = plan[site.outputs] if isinstance(site.outputs, str) else site.outputs
            total += 2 * site.area * inputs * outputs
        return total


def save_checkpoint(config: ICNetConfig, weights: WeightDict, directory: str) -> str:
    """Writes `weights` as a tf.train.Checkpoint with plan.json beside it; returns the prefix."""
    model = build_icnet(config, _GRAPH_SIZE)
    assign_weights(model, weights)
    return save_model_checkpoint(model, config, directory)


def check_schedule(schedule: Sequence[float]) -> tuple[float, ...]:
    """Validates a keep schedule: fractions of the original widths, in (0, 1], non-increasing.

    Raises:
      OptionError: naming `schedule`.
    """
    if not schedule:
        raise OptionError("schedule", "the keep schedule is empty")
    values = []
    for keep in schedule:
        try:
            values.append(check_keep(keep))
        except ValueError as e:
            raise OptionError("schedule", str(e)) from None
    if any(b > a for a, b in zip(values, values[1:])):
        raise OptionError("schedule", f"keeps must not increase (widths only shrink), got "
                                      f"{values}")
    return tuple(values)


# --------------------------------------------------------------------------------------------
# Parsing (for the binaries).


def parse_schedule(text: str) -> tuple[float, ...]:
    """`0.5` (one shot) or `0.75,0.5` (progressive) -> the checked schedule.

    Raises:
      OptionError: naming `schedule`.
    """
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise OptionError("schedule", f"expected a fraction such as 0.5 or comma-separated "
                                      f"fractions such as 0.75,0.5, got {text!r}") from None
    return check_schedule(values)


def parse_overrides(text: str) -> tuple[tuple[str, float], ...]:
    """`conv5=0.6,sub1=1.0` -> (("conv5", 0.6), ("sub1", 1.0)).

    Raises:
      OptionError: naming `keep_overrides`.
    """
    result = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            keep = float(value) if sep and key else None
        except ValueError:
            keep = None
        if keep is None:
            raise OptionError("keep_overrides", f"expected KEY=KEEP items such as conv5=0.6, "
                                                f"got {item!r}")
        try:
            result.append((key, check_keep(keep, key)))
        except ValueError as e:
            raise OptionError("keep_overrides", str(e)) from None
    return tuple(result)
