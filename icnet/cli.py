"""Parsing helpers shared by the absl binaries."""

from __future__ import annotations


def parse_size(text: str, flag: str) -> tuple[int, int]:
    """Parses `HxW` (e.g. `1025x2049`) into (H, W), naming `flag` in the error."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--{flag}: expected HxW such as 1025x2049, got {text!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"--{flag}: sizes must be positive, got {text!r}")
    return height, width
