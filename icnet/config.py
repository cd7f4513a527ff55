"""The one model config: class count, channel plan and BN variant, with JSON round trips.

A channel plan maps every prunable conv's reference layer name to its output channels.
`filter_scale` 1 (the released half-width net) and 2 (full width) are just two plans; pruning
produces a third. The classifiers (`conv6_cls`, `sub4_out`, `sub24_out`) are not in the plan:
their width is `num_classes`.
"""

from __future__ import annotations

import dataclasses
import json
import os

from icnet.fileio import atomic_write_bytes

# Output channels at filter_scale 1, in the reference graph's order (REFERENCE.md §1).
_STAGES = {  # stage -> (block count, bottleneck width, output width)
    "conv2": (3, 32, 128),
    "conv3": (4, 64, 256),
    "conv4": (6, 128, 512),
    "conv5": (3, 256, 1024),
}


def _reference_widths() -> dict[str, int]:
    widths = {"conv1_1_3x3_s2": 32, "conv1_2_3x3": 32, "conv1_3_3x3": 64}
    for stage, (blocks, mid, out) in _STAGES.items():
        for block in range(1, blocks + 1):
            prefix = f"{stage}_{block}"
            if block == 1:
                widths[f"{prefix}_1x1_proj"] = out
            widths[f"{prefix}_1x1_reduce"] = mid
            widths[f"{prefix}_3x3"] = mid
            widths[f"{prefix}_1x1_increase"] = out
    widths.update({
        "conv5_4_k1": 256, "conv_sub4": 128, "conv3_1_sub2_proj": 128, "conv_sub2": 128,
        "conv1_sub1": 32, "conv2_sub1": 32, "conv3_sub1": 64, "conv3_sub1_proj": 128,
    })
    return widths


REFERENCE_WIDTHS: dict[str, int] = _reference_widths()
CLASSIFIERS = ("conv6_cls", "sub4_out", "sub24_out")


def reference_plan(filter_scale: float) -> dict[str, int]:
    """The reference channel plan scaled by `filter_scale` (1 = half width, 2 = full width).

    Fractional scales (e.g. 0.25) give the narrow plans used by tests.
    """
    if filter_scale <= 0:
        raise ValueError(f"filter_scale must be > 0, got {filter_scale}")
    return {name: max(1, int(round(width * filter_scale)))
            for name, width in REFERENCE_WIDTHS.items()}


@dataclasses.dataclass(frozen=True)
class ICNetConfig:
    """Everything that defines an ICNet's variables.

    Attributes:
      num_classes: classifier width.
      plan: output channels of every prunable conv, by reference layer name.
      batch_norm: True for the training variant (conv + BN, with the `sub4_out`/`sub24_out`
        heads); False for the BN-merged variant (conv with bias, no heads), as in the
        released `*_30k.npy` files.
    """

    num_classes: int
    plan: dict[str, int]
    batch_norm: bool = True

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        missing = sorted(set(REFERENCE_WIDTHS) - set(self.plan))
        unknown = sorted(set(self.plan) - set(REFERENCE_WIDTHS))
        if missing or unknown:
            raise ValueError(f"channel plan does not match the ICNet graph: "
                             f"missing layers {missing}, unknown layers {unknown}")
        bad = {k: v for k, v in self.plan.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"channel plan widths must be positive integers: {bad}")

    @classmethod
    def from_filter_scale(cls, filter_scale: float, num_classes: int,
                          batch_norm: bool = True) -> "ICNetConfig":
        return cls(num_classes, reference_plan(filter_scale), batch_norm)

    def replace(self, **changes) -> "ICNetConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps({"num_classes": self.num_classes, "batch_norm": self.batch_norm,
                           "plan": self.plan}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> "ICNetConfig":
        try:
            data = json.loads(text)
            return cls(int(data["num_classes"]), {k: int(v) for k, v in data["plan"].items()},
                       bool(data.get("batch_norm", True)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{source}: not a valid ICNet plan file: {e}") from e

    def save(self, path: str) -> None:
        """Writes the config as JSON atomically (temp file, then rename)."""
        atomic_write_bytes(path, self.to_json().encode())

    @classmethod
    def load(cls, path: str) -> "ICNetConfig":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"plan file not found: {path}")
        with open(path) as f:
            return cls.from_json(f.read(), source=path)


PLAN_FILENAME = "plan.json"

