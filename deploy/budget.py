"""Per-group widths for a cost budget (estimated latency or GFLOPs): a NetAdapt-style search.

Each step proposes, for every channel group, the smallest cut of its width (in multiples of
`round_to`, down to `min_keep` of its source width) that saves a fixed slice of the cost,
scores it by the mIoU the cut loses per unit of cost saved, takes the best and repeats until
the cost meets the budget (`search`). The mIoU a cut loses comes from the layer sensitivity
(deploy.sensitivity: every group cut alone to a few keeps by the pruning criterion and
evaluated without fine-tuning, measured once), linear in the width between measured keeps;
losses of different groups are taken to add up.

Against a measured latency (`fit`), the searched plan is measured, the estimate re-anchored to
the measurement, and the plan cut further when it runs over the budget or widened back
(`grow`: the widening that recovers the most estimated mIoU per unit of cost first) when it
runs well under it, until the measurement is within the budget's tolerance band.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from deploy.pruning import ChannelGroup, kept_width
from deploy.sensitivity import Row

# Slices per search: the step is (start cost - budget) / SEARCH_SLICES.
SEARCH_SLICES = 12
# `fit` stops when the measured cost is within (1 - UNDER, 1 + OVER) of the budget (timings
# vary by a few percent between runs), after at most FIT_ROUNDS measurements.
UNDER, OVER = 0.05, 0.02
FIT_ROUNDS = 4


@dataclasses.dataclass(frozen=True)
class Step:
    """One cut the search took."""

    group: str
    width: int
    cost: float  # the plan's cost after the cut
    loss: float  # the cut's estimated mIoU loss (fraction; negative: a widening's gain)


@dataclasses.dataclass(frozen=True)
class Fit:
    """`fit`'s result: the plan, the steps that made it, every round (kind "cut" or "grow",
    its steps, estimate and measurement) and the plan's measurement."""

    plan: dict[str, int]
    steps: list[Step]
    rounds: list[dict]
    measured: float


def _losses(groups: Sequence[ChannelGroup], rows: Sequence[Row]
            ) -> dict[str, list[tuple[int, float]]]:
    """Per group, (width, mIoU drop) points sorted by width, the full width at 0."""
    points = {g.name: {g.channels: 0.0} for g in groups}
    for row in rows:
        if row.group in points:
            points[row.group][row.width] = max(row.drop, 0.0)
    return {name: sorted(widths.items()) for name, widths in points.items()}


def _loss_at(points: list[tuple[int, float]], width: int) -> float:
    """The drop at `width`, linear between measured widths (flat beyond them)."""
    if width <= points[0][0]:
        return points[0][1]
    for (low, low_drop), (high, high_drop) in zip(points, points[1:]):
        if width <= high:
            return low_drop + (high_drop - low_drop) * (width - low) / (high - low)
    return points[-1][1]


def narrowest_plan(plan: Mapping[str, int], groups: Sequence[ChannelGroup], min_keep: float,
                   round_to: int) -> dict[str, int]:
    """Every group at `min_keep` of its width in `plan`."""
    result = dict(plan)
    for group in groups:
        for name in group.producers:
            result[name] = kept_width(group.channels, min_keep, round_to)
    return result


def search(plan: Mapping[str, int], groups: Sequence[ChannelGroup], rows: Sequence[Row],
           cost: Callable[[Mapping[str, int]], float], budget: float, min_keep: float,
           round_to: int = 1, slice_cost: float | None = None
           ) -> tuple[dict[str, int], list[Step]]:
    """The plan within `budget` found by the search (see the module docstring).

    Args:
      plan: the start (the source's widths, or an earlier result to cut further).
      groups: the source's channel groups (their `channels` are the source widths).
      rows: the sensitivity of the source (deploy.sensitivity.measure).
      cost: a plan's estimated cost (seconds, GFLOPs).
      budget: the cost to reach.
      min_keep: the narrowest fraction of a group's source width.
      round_to: widths are multiples of this (or the group's full width).
      slice_cost: the saving each step aims for (default: the gap / SEARCH_SLICES).

    Returns:
      (the plan, the steps taken).

    Raises:
      ValueError: even the narrowest allowed plan costs more than `budget`.
    """
    narrowest = narrowest_plan(plan, groups, min_keep, round_to)
    if cost(narrowest) > budget:
        raise ValueError(f"even the narrowest allowed plan (every group at keep {min_keep:g}) "
                         f"costs {cost(narrowest):.4g}")
    plan, steps = dict(plan), []
    losses = _losses(groups, rows)
    current = cost(plan)
    slice_cost = slice_cost or (current - budget) / SEARCH_SLICES
    while current > budget:
        need = min(slice_cost, current - budget)
        best = None  # (score, saved, group, width, cost)
        for group in groups:
            width = plan[group.producers[0]]
            floor = narrowest[group.producers[0]]
            loss = _loss_at(losses[group.name], width)
            candidate = width - (width % round_to or round_to)
            while candidate >= floor:
                trial = plan | {name: candidate for name in group.producers}
                trial_cost = cost(trial)
                saved = current - trial_cost
                if saved >= need or candidate - round_to < floor:
                    if saved > 0:
                        extra = _loss_at(losses[group.name], candidate) - loss
                        # Cuts that save the slice beat those that cannot (at their floor).
                        score = (saved < need, extra / saved)
                        if best is None or score < best[0]:
                            best = (score, group, candidate, trial_cost, extra)
                    break
                candidate -= round_to
        if best is None:  # cannot happen while the narrowest plan is within the budget
            raise ValueError("no group can be cut further")
        _, group, width, current, extra = best
        for name in group.producers:
            plan[name] = width
        steps.append(Step(group.name, width, current, extra))
    return plan, steps


def grow(plan: Mapping[str, int], groups: Sequence[ChannelGroup], rows: Sequence[Row],
         cost: Callable[[Mapping[str, int]], float], budget: float, round_to: int = 1
         ) -> tuple[dict[str, int], list[Step]]:
    """`plan` widened back toward the source widths (the groups' `channels`) while its cost
    stays within `budget`: each step widens the group whose next width (`round_to` more, or
    its full width) recovers the most estimated mIoU per unit of cost added (the cheapest
    first among equals), until no widening fits. Returns (the plan, the steps taken)."""
    plan, steps = dict(plan), []
    losses = _losses(groups, rows)
    current = cost(plan)
    while True:
        best = None  # (score, group, width, cost, gain)
        for group in groups:
            width = plan[group.producers[0]]
            if width >= group.channels:
                continue
            candidate = min(width + round_to - width % round_to, group.channels)
            trial_cost = cost(plan | {name: candidate for name in group.producers})
            if trial_cost > budget:
                continue
            added = trial_cost - current
            gain = (_loss_at(losses[group.name], width)
                    - _loss_at(losses[group.name], candidate))
            score = (-gain / added if added > 0 else -float("inf"), added)
            if best is None or score < best[0]:
                best = (score, group, candidate, trial_cost, gain)
        if best is None:
            return plan, steps
        _, group, width, current, gain = best
        for name in group.producers:
            plan[name] = width
        steps.append(Step(group.name, width, current, -gain))


def fit(plan: Mapping[str, int], groups: Sequence[ChannelGroup], rows: Sequence[Row],
        cost: Callable[[Mapping[str, int]], float],
        anchor: Callable[[Mapping[str, int], float], None],
        measure: Callable[[Mapping[str, int]], float], budget: float, min_keep: float,
        round_to: int = 1) -> Fit:
    """The plan whose measured cost meets `budget` (see the module docstring).

    Each round cuts the plan (`search`) while its estimate is over the budget, or widens it
    (`grow`) while it is within, measures it (`measure`), and stops when the measurement is
    within (1 - UNDER, 1 + OVER) of the budget; otherwise `anchor(plan, measured)` re-anchors
    `cost` to the measurement for the next round, at most FIT_ROUNDS rounds.

    Returns:
      The widest measured plan within budget * (1 + OVER), or the last one if none is.
    """
    plan, steps, rounds, best = dict(plan), [], [], None
    for _ in range(FIT_ROUNDS):
        kind = "cut" if cost(plan) > budget else "grow"
        try:
            plan, taken = (search(plan, groups, rows, cost, budget, min_keep, round_to)
                           if kind == "cut" else grow(plan, groups, rows, cost, budget, round_to))
        except ValueError:  # re-anchored past the narrowest plan: keep what was measured
            break
        if rounds and not taken:
            break
        steps += taken
        measured = measure(plan)
        rounds.append({"kind": kind, "steps": len(taken), "estimate": cost(plan),
                       "measured": measured})
        if measured <= budget * (1 + OVER) and (best is None or measured > best[0]):
            best = (measured, dict(plan), len(steps))
        if budget * (1 - UNDER) <= measured <= budget * (1 + OVER):
            break
        anchor(plan, measured)
    if best is None:
        return Fit(plan, steps, rounds, rounds[-1]["measured"])
    measured, plan, count = best
    return Fit(plan, steps[:count], rounds, measured)
