"""Layer sensitivity: every channel group pruned alone at several keeps, without fine-tuning,
and the mIoU each costs; and the per-group keeps that reach a FLOP budget losing least.

`measure(...)` evaluates the source once and every (group, keep) once on the same images;
`plan_for_budget(...)` then starts from the full plan and, greedily, moves the group whose
next lower measured keep loses the least mIoU per GFLOP saved, until the plan's FLOPs are
within the budget (the result is a plan, usable with `deploy.prune --plan`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tf_keras
from absl import logging

from deploy.pruning import PlanCost, check_keep, kept_width, model_groups, prune
from icnet.config import ICNetConfig
from icnet.data import Source
from icnet.evaluation import evaluate
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
            keeps: Sequence[float], input_size: tuple[int, int]) -> tuple[float, list[Row]]:
    """(the source's mIoU, a row per group and keep)."""
    for keep in keeps:
        check_keep(keep, "sensitivity keep")
    cost = PlanCost(config, input_size)
    full = cost.flops(config.plan)
    baseline = evaluate(config, weights, source, eval_images)["miou"]
    groups = model_groups(config)
    rows = []
    for number, group in enumerate(groups, 1):
        for keep in keeps:
            width = kept_width(group.channels, keep)
            if width == group.channels:
                continue
            plan = dict(config.plan) | {name: width for name in group.producers}
            tf_keras.backend.clear_session()
            pruned, pruned_weights = prune(config, weights, plan)
            miou = evaluate(pruned, pruned_weights, source, eval_images, log_every=10**6)["miou"]
            rows.append(Row(group.name, group.channels, keep, width, miou, baseline - miou,
                            (full - cost.flops(plan)) / 1e9))
            logging.info("sensitivity: group %d/%d %s keep %g: mIoU %.2f%% (drop %.2f pt)",
                         number, len(groups), group.name, keep, 100 * miou,
                         100 * (baseline - miou))
    return baseline, rows


def plan_for_budget(config: ICNetConfig, rows: Sequence[Row], target_gflops: float,
                    input_size: tuple[int, int]) -> dict[str, int]:
    """The plan of per-group measured keeps within `target_gflops` that loses the least
    summed mIoU drop (greedy by drop per GFLOP saved).

    Raises:
      ValueError: the narrowest measured plan is still above the budget.
    """
    cost = PlanCost(config, input_size)
    groups = {g.name: g for g in model_groups(config)}
    options = {}
    for row in rows:
        options.setdefault(row.group, []).append(row)
    for choices in options.values():
        choices.sort(key=lambda r: -r.keep)
    plan, level = dict(config.plan), {name: -1 for name in options}

    def apply(name: str, row: Row) -> None:
        for producer in groups[name].producers:
            plan[producer] = row.width

    narrowest = dict(plan)
    for name, choices in options.items():
        for producer in groups[name].producers:
            narrowest[producer] = choices[-1].width
    if cost.flops(narrowest) / 1e9 > target_gflops:
        raise ValueError(f"target_gflops {target_gflops:g}: even the narrowest measured plan "
                         f"needs {cost.flops(narrowest) / 1e9:.2f} GFLOPs")
    while cost.flops(plan) / 1e9 > target_gflops:
        best, best_score = None, None
        for name, choices in options.items():
            if level[name] + 1 >= len(choices):
                continue
            current = choices[level[name]] if level[name] >= 0 else None
            step = choices[level[name] + 1]
            saved = step.gflops_saved - (current.gflops_saved if current else 0.0)
            extra = step.drop - (current.drop if current else 0.0)
            score = max(extra, 0.0) / max(saved, 1e-9)
            if best_score is None or score < best_score:
                best, best_score = name, score
        level[best] += 1
        apply(best, options[best][level[best]])
    return plan
