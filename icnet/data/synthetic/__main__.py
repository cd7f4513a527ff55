"""Writes a synthetic data set in the official Cityscapes directory layout.

    python -m icnet.data.synthetic --output_dir data/synthetic --train 500 --val 100 \\
        --size 512x1024 --seed 0
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app, flags

from icnet.cli import parse_size
from icnet.data.synthetic import write_cityscapes_layout


def _valid_size(text: str) -> bool:
    try:
        parse_size(text, "size")
    except ValueError:
        return False
    return True


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a script, so importing stays flag-free)."""
    flags.DEFINE_string("output_dir", None, "Output directory (Cityscapes layout).",
                        required=True)
    flags.DEFINE_integer("train", 500, "Number of training scenes.", lower_bound=0)
    flags.DEFINE_integer("val", 100, "Number of validation scenes.", lower_bound=0)
    flags.DEFINE_string("size", "512x1024", "Image size as HEIGHTxWIDTH.")
    flags.DEFINE_integer("seed", 0, "Data set seed.", lower_bound=0)
    flags.register_validator(
        "size", _valid_size,
        message="--size must be HEIGHTxWIDTH with positive integers, e.g. 512x1024")


def main(argv: Sequence[str]) -> None:
    """Writes the synthetic data set described by the flags."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    args = flags.FLAGS
    height, width = parse_size(args.size, "size")
    try:
        write_cityscapes_layout(args.output_dir, args.train, args.val, height, width, args.seed)
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
