"""Prints one JSON object with the parameter count and FLOPs of an ICNet channel plan.

Examples:
  python -m benchmarks.profile_model --filter_scale 1 --num_classes 19 --input_size 1024x2048
  python -m benchmarks.profile_model --model runs/pruned --input_size 1024x2048

Counts are for the BN-merged (deployment) variant unless --batch_norm, which adds the BN
layers and the two training heads. A multiply-add counts as 2 FLOPs.
"""

from __future__ import annotations

import json
from absl import app, flags

from icnet import exits
from icnet.cli import parse_size
from icnet.model import MIN_INPUT_SIZE
from icnet.profiling import model_profile
from train.common_flags import define_plan_flags, plan_from_flags

define_plan_flags(filter_scale=1.0)
flags.DEFINE_string("input_size", "1024x2048", "Input HxW.")
flags.DEFINE_bool("batch_norm", False, "Profile the BN training variant instead of BN-merged.")
FLAGS = flags.FLAGS


def _main() -> None:
    size = parse_size(FLAGS.input_size, "input_size", MIN_INPUT_SIZE)
    config, source = plan_from_flags()
    result = model_profile(config.replace(batch_norm=FLAGS.batch_norm), size)
    print(json.dumps({"source": source, **result}))


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
