"""Parsing helpers and flag groups shared by the absl binaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from absl import flags

if TYPE_CHECKING:
    from icnet.config import ICNetConfig


def parse_size(text: str, flag: str, minimum: int = 1) -> tuple[int, int]:
    """Parses `HxW` (e.g. `1025x2049`) into (H, W), naming `flag` in the error.

    `minimum`: the smallest height and width accepted (a model input: model.MIN_INPUT_SIZE).
    """
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--{flag}: expected HxW such as 1025x2049, got {text!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"--{flag}: sizes must be positive, got {text!r}")
    if height < minimum or width < minimum:
        raise ValueError(f"--{flag}: {height}x{width} is smaller than the smallest input ICNet "
                         f"takes, {minimum}x{minimum}")
    return height, width


def parse_choices(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """A comma-separated subset of `allowed`, in `allowed`'s order, naming `flag` in errors."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise ValueError(f"--{flag}: unknown {unknown or 'empty list'}; choose from "
                         f"{', '.join(allowed)}")
    return tuple(name for name in allowed if name in names)


def define_plan_flags(filter_scale: float) -> None:
    """--model_dir, --plan, --filter_scale (default `filter_scale`) and --num_classes: which
    channel plan a profiling binary looks at (see plan_from_flags)."""
    flags.DEFINE_string("model_dir", None, "Model directory with plan.json (e.g. a pruned model).")
    flags.DEFINE_string("plan", None, "A plan.json file.")
    flags.DEFINE_float("filter_scale", filter_scale, "Reference plan width: 1 (half) or 2 "
                       "(full); other positive values scale the widths.")
    flags.DEFINE_integer("num_classes", 19, "Classifier width (ignored with --model_dir/--plan).")


def plan_from_flags() -> tuple[ICNetConfig, str]:
    """(config, where it came from) of the plan the define_plan_flags flags select.

    Raises:
      FileNotFoundError, ValueError: see icnet.checkpoint.select_plan.
    """
    from icnet.checkpoint import select_plan  # TensorFlow, only for the binaries that use it

    values = flags.FLAGS
    return select_plan(values.model_dir, values.plan, values.filter_scale, values.num_classes)
