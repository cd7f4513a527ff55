"""Parsing helpers shared by the absl binaries."""

from __future__ import annotations

from collections.abc import Sequence


def parse_size(text: str, flag: str) -> tuple[int, int]:
    """Parses `HxW` (e.g. `1025x2049`) into (H, W), naming `flag` in the error."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--{flag}: expected HxW such as 1025x2049, got {text!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"--{flag}: sizes must be positive, got {text!r}")
    return height, width


def parse_choices(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """A comma-separated subset of `allowed`, in `allowed`'s order, naming `flag` in errors."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise ValueError(f"--{flag}: unknown {unknown or 'empty list'}; choose from "
                         f"{', '.join(allowed)}")
    return tuple(name for name in allowed if name in names)
