"""Layer sensitivity: every channel group pruned alone at several keeps, without fine-tuning,
and the mIoU each costs.

`measure(...)` evaluates the source once and every (group, keep) once on the same images; the
channels each cut keeps are the pruning criterion's. `criterion_rows(...)` is the cheap
stand-in that evaluates nothing: a cut's "drop" is the share of its group's importance scores
the cut removes (a proxy that treats every group as equally important). deploy.budget
searches per-group widths for a FLOP or latency budget from either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from absl import logging

from deploy.pruning import (CRITERIA, Evidence, PlanCost, check_keep, kept_width, mask_weights,
                            model_groups, select_channels)
from icnet.config import ICNetConfig
from icnet.data import Source
from icnet.evaluation import evaluate, segmenter_for
from icnet.weights import WeightDict


@dataclasses.dataclass(frozen=True)
class Row:
    group: str
    channels: int
    keep: float
    width: int
    miou: float
    drop: float  # the source's mIoU minus this one (a fraction)
    gflops_saved: float


def measure(config: ICNetConfig, weights: WeightDict, source: Source, eval_images: int,
            keeps: Sequence[float], input_size: tuple[int, int], criterion: str = "l1",
            evidence: Evidence = Evidence()) -> tuple[float, list[Row]]:
    """(the source's mIoU, a row per group and keep)."""
    for keep in keeps:
        check_keep(keep, "sensitivity keep")
    cost = PlanCost(config, input_size)
    full = cost.flops(config.plan)
    segmenter = segmenter_for(config, weights, source)
    baseline = evaluate(config, weights, source, eval_images, segmenter=segmenter)["miou"]
    groups = model_groups(config)
    rows = []
    for number, group in enumerate(groups, 1):
        for keep in keeps:
            width = kept_width(group.channels, keep)
            if width == group.channels:
                continue
            plan = dict(config.plan) | {name: width for name in group.producers}
            # The cut's channels zeroed in the one model built (what the pruned model
            # computes, without building one per cut).
            kept = select_channels(weights, [group], plan, criterion, evidence)
            segmenter.load(mask_weights(weights, [group], kept))
            miou = evaluate(config, weights, source, eval_images, log_every=10**6,
                            segmenter=segmenter)["miou"]
            rows.append(Row(group.name, group.channels, keep, width, miou, baseline - miou,
                            (full - cost.flops(plan)) / 1e9))
            logging.info("sensitivity: group %d/%d %s keep %g: mIoU %.2f%% (drop %.2f pt)",
                         number, len(groups), group.name, keep, 100 * miou,
                         100 * (baseline - miou))
    return baseline, rows


def criterion_rows(config: ICNetConfig, weights: WeightDict, keeps: Sequence[float],
                   criterion: str = "l1", evidence: Evidence = Evidence()) -> list[Row]:
    """Rows without evaluation: `drop` is the share of the group's importance (by
    `criterion`, scores shifted to be non-negative) in the channels a keep removes; `miou`
    is NaN and `gflops_saved` 0."""
    rows = []
    for group in model_groups(config):
        scores = np.sort(np.asarray(CRITERIA[criterion](weights, group, evidence), np.float64))
        scores = scores - min(scores[0], 0.0)
        total = float(scores.sum()) or 1.0
        for keep in keeps:
            width = kept_width(group.channels, check_keep(keep, "sensitivity keep"))
            if width < group.channels:
                share = float(scores[:group.channels - width].sum()) / total
                rows.append(Row(group.name, group.channels, keep, width, float("nan"), share,
                                0.0))
    return rows
