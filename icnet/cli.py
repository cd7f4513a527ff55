"""Parsing helpers for the binaries' flag values (their errors name the flag)."""

from __future__ import annotations

from collections.abc import Sequence

from icnet.exits import OptionError


def parse_size(text: str, flag: str, minimum: int = 1) -> tuple[int, int]:
    """Parses `HxW` (e.g. `1025x2049`) into (H, W), naming `flag` in the error.

    `minimum`: the smallest height and width accepted (a model input: model.MIN_INPUT_SIZE).
    """
    try:
        height, width = (int(part) for part in str(text).lower().split("x"))
    except ValueError:
        raise OptionError(flag, f"expected HxW such as 1025x2049, got {text!r}") from None
    if height < 1 or width < 1:
        raise OptionError(flag, f"sizes must be positive, got {text!r}")
    if height < minimum or width < minimum:
        raise OptionError(flag, f"{height}x{width} is smaller than the smallest input ICNet "
                                f"takes, {minimum}x{minimum}")
    return height, width


def parse_choices(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """A comma-separated subset of `allowed`, in `allowed`'s order, naming `flag` in errors."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise OptionError(flag, f"unknown {unknown or 'empty list'}; choose from "
                                f"{', '.join(allowed)}")
    return tuple(name for name in allowed if name in names)
