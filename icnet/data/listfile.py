"""Examples of a segmentation dataset, and reading them from the reference's list files.

A list file has one `image_path label_path` pair per line, both relative to a data directory
(absolute paths are kept as they are). Blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Example(NamedTuple):
    """One image, its label map and a short name for reports and saved predictions."""

    image_path: str
    label_path: str
    name: str


class Listing(NamedTuple):
    """The examples of a dataset split and how to read their labels.

    Attributes:
        examples: the examples, in the list file's order (directory layouts: sorted by path).
        label_lut: uint8[256] mapping a stored label value to a trainId (255 = ignore).
    """

    examples: list[Example]
    label_lut: np.ndarray


def identity_lut() -> np.ndarray:
    """A uint8[256] table that leaves label values as they are (files that hold trainIds)."""
    return np.arange(256, dtype=np.uint8)


def require_dir(path: str | os.PathLike | None, what: str) -> Path:
    """Returns `path` as a Path if it is a directory.

    Raises:
        FileNotFoundError: naming `what` and the path if it is unset or not a directory.
    """
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{what} is not set")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist or is not a directory")
    return Path(path)


def require_files(image_path: Path, label_path: Path, where: str = "") -> None:
    """Raises ValueError naming the first of the two files that is missing."""
    for kind, path in (("image", image_path), ("label", label_path)):
        if not path.is_file():
            raise ValueError(f"missing {kind} file {path}{where}")


def read_list_file(list_file: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                   label_lut: np.ndarray | None = None) -> Listing:
    """Reads a list file of `image_path label_path` lines.

    Args:
        list_file: the list file.
        data_dir: directory the paths are relative to; defaults to the list file's directory.
        label_lut: uint8[256] table from stored label values to trainIds; identity by default.

    Returns:
        The Listing, examples in the list's order (as the reference reads them, so the first
        N of `--num_images` are the list's first N); an example's name is its image path as
        written in the list, without the extension.

    Raises:
        FileNotFoundError: if the list file or data_dir does not exist.
        ValueError: for a malformed line (naming file and line number), a missing image or
            label file, or a list with no examples.
    """
    list_path = Path(list_file)
    if not list_path.is_file():
        raise FileNotFoundError(f"list file {str(list_path)!r} does not exist")
    root = require_dir(list_path.parent if data_dir is None else data_dir, "data_dir")
    examples = []
    with open(list_path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f" ({list_path}, line {number})"
            if len(fields) != 2:
                raise ValueError(f"expected 'image_path label_path', got {line.strip()!r}{where}")
            image_path, label_path = root / fields[0], root / fields[1]
            require_files(image_path, label_path, where)
            examples.append(Example(str(image_path), str(label_path),
                                    os.path.splitext(fields[0])[0]))
    if not examples:
        raise ValueError(f"list file {list_path} names no examples")
    return Listing(examples, identity_lut() if label_lut is None else label_lut)
