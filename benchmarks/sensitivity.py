r"""Layer sensitivity of a trained model, and a plan for a FLOP budget from it
(deploy.sensitivity).

Example:
  python -m benchmarks.sensitivity --model runs/fs2 --output_dir reports/sensitivity \
      --keeps 0.75,0.5,0.25 --eval_images 10 --target_gflops 60

Writes --output_dir/sensitivity.json, SENSITIVITY.md (the mIoU drop of every group at every
keep, pruned alone, without fine-tuning), sensitivity.png, and with --target_gflops
plan.json: per-group widths within the budget, for `deploy.prune --plan`. The data flags
default to the model's training data (its train_summary.json).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os

from absl import app, flags

from deploy.budget import narrowest_plan, search
from deploy.pruning import PlanCost, model_groups, parse_schedule
from deploy.sensitivity import measure
from icnet import exits
from icnet.checkpoint import model_dir_of
from icnet.cli import parse_size
from icnet.fileio import atomic_write_bytes
from icnet.inference import load_weights
from icnet.model import MIN_INPUT_SIZE
from icnet.training import read_summary
from train.common_flags import data_values, define_data_flags, make_data_source

flags.DEFINE_string("model", None, "The trained model (model dir, checkpoint or .npy).")
flags.DEFINE_string("output_dir", "reports/sensitivity", "Where the results go.")
flags.DEFINE_string("keeps", "0.75,0.5,0.25", "Keeps to try on every group.")
flags.DEFINE_integer("eval_images", 10, "Val images of every evaluation.")
flags.DEFINE_string("input_size", "1025x2049", "HxW at which FLOPs are counted.")
flags.DEFINE_float("target_gflops", None, "Also write plan.json: per-group keeps within this "
                   "many GFLOPs losing least (deploy.budget's search).")
define_data_flags()
FLAGS = flags.FLAGS


def _plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(r.group for r in rows))
    keeps = sorted({r.keep for r in rows}, reverse=True)
    figure, axes = plt.subplots(figsize=(10, max(4, 0.22 * len(groups))))
    for keep in keeps:
        mine = {r.group: r.drop for r in rows if r.keep == keep}
        axes.plot([100 * mine.get(g, 0.0) for g in groups], range(len(groups)), "o",
                  label=f"keep {keep:g}")
    axes.set_yticks(range(len(groups)), groups, fontsize=6)
    axes.invert_yaxis()
    axes.set_xlabel("mIoU drop (points), the group pruned alone, no fine-tuning")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _main() -> None:
    if not FLAGS.model:
        raise exits.OptionError("model", "is required")
    record = {} if FLAGS.model.endswith(".npy") else read_summary(model_dir_of(FLAGS.model))
    source = make_data_source(data_values(record.get("data")), "val")
    config, weights = load_weights(FLAGS.model)
    size = parse_size(FLAGS.input_size, "input_size", MIN_INPUT_SIZE)
    keeps = parse_schedule(FLAGS.keeps)
    cost = PlanCost(config, size)
    groups = model_groups(config)
    if FLAGS.target_gflops is not None:  # checked before the minutes of evaluation
        narrowest = cost.flops(narrowest_plan(config.plan, groups, min(keeps), 1)) / 1e9
        if narrowest > FLAGS.target_gflops:
            raise exits.OptionError("target_gflops", (
                f"{FLAGS.target_gflops:g}: even the narrowest allowed plan (every group at "
                f"keep {min(keeps):g}) costs {narrowest:.4g} GFLOPs"))
    baseline, rows = measure(config, weights, source, FLAGS.eval_images,
                             keeps, size)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    result = {"model": FLAGS.model, "miou": baseline, "eval_images": FLAGS.eval_images,
              "input_size": list(size), "rows": [dataclasses.asdict(r) for r in rows]}
    lines = [f"# Layer sensitivity of `{FLAGS.model}`", "",
             f"Every channel group pruned alone (by L1), no fine-tuning; mIoU on "
             f"{FLAGS.eval_images} val images (the source: {100 * baseline:.2f}%); GFLOPs "
             f"saved at {size[0]}x{size[1]}.", "",
             "| group | channels | keep | width | mIoU | drop | GFLOPs saved |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.group} | {r.channels} | {r.keep:g} | {r.width} | {100 * r.miou:.2f}% | "
              f"{100 * r.drop:+.2f} pt | {r.gflops_saved:.2f} |" for r in rows]
    if FLAGS.target_gflops is not None:
        plan, _ = search(config.plan, groups, rows, lambda p: cost.flops(p) / 1e9,
                         FLAGS.target_gflops, min(keeps))
        config.replace(plan=plan).save(os.path.join(FLAGS.output_dir, "plan.json"))
        gflops = cost.flops(plan) / 1e9
        result["target"] = {"gflops": FLAGS.target_gflops, "plan_gflops": gflops, "plan": plan}
        lines += ["", f"plan.json: per-group keeps within {FLAGS.target_gflops:g} GFLOPs "
                      f"({gflops:.2f} GFLOPs of convolutions): `deploy.prune --plan "
                      f"{os.path.join(FLAGS.output_dir, 'plan.json')}`."]
    lines += ["", "![sensitivity](sensitivity.png)", ""]
    atomic_write_bytes(os.path.join(FLAGS.output_dir, "sensitivity.json"),
                       json.dumps(result, indent=1).encode())
    atomic_write_bytes(os.path.join(FLAGS.output_dir, "SENSITIVITY.md"), "\n".join(lines).encode())
    _plot(rows, os.path.join(FLAGS.output_dir, "sensitivity.png"))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main, {"schedule": "keeps"}))
