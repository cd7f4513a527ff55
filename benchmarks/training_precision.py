r"""bf16 mixed-precision training against float32, at the same steps: speed, loss curve, mIoU.

Example (the check behind train.train's bf16 default on CPUs with native bf16):
  python -m benchmarks.training_precision --output_dir reports/training_precision \
      --filter_scale 2 --steps 200 --synthetic_size 1024x2048 --synthetic_count 200 \
      --eval_images 20

Trains the same model three times with train.train's loop: float32 with --seed, bfloat16 with
the same seed (the same initial weights and batches: only the arithmetic differs), and float32
with --seed + 1 (how far two float32 runs drift apart: the noise the bf16 difference is
compared with). Each run is evaluated on the same val scenes. Writes RESULTS.md, results.json
and curves.png into --output_dir; the models go to --work_dir. Rerunning resumes: finished
runs and evaluations are kept. SIGINT/SIGTERM stop it (code 75).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import tf_keras
from absl import app, flags, logging

from icnet import exits
from icnet.cli import parse_size
from icnet.config import ICNetConfig
from icnet.evaluation import evaluate
from icnet.fileio import atomic_write_bytes
from icnet.inference import load_weights
from icnet.model import MIN_INPUT_SIZE
from icnet.training import TrainOptions, read_summary, train
from train.common_flags import data_values, define_data_flags, make_data_source

flags.DEFINE_string("output_dir", "reports/training_precision", "Where the results go.")
flags.DEFINE_string("work_dir", "runs/training_precision", "Where the three models train.")
flags.DEFINE_float("filter_scale", 2.0, "Model width (2: full width).")
flags.DEFINE_integer("steps", 200, "Training steps of every run.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_string("crop_size", "256x512", "Crop HxW.")
flags.DEFINE_integer("eval_images", 20, "Val scenes for the mIoU of every run.")
define_data_flags()
FLAGS = flags.FLAGS
RUNS = (("fp32", False, 0), ("bf16", True, 0), ("fp32_other_seed", False, 1))


def _run(name: str, mixed: bool, seed_offset: int, data: dict) -> dict:
    """Trains (or resumes) one run and evaluates it once; returns its record."""
    model_dir = os.path.join(FLAGS.work_dir, name)
    result_path = os.path.join(model_dir, "precision_result.json")
    if os.path.isfile(result_path):
        with open(result_path) as f:
            return json.load(f)
    seed = data["seed"] + seed_offset
    source = make_data_source({**data, "seed": seed}, "train")
    options = TrainOptions(model_dir=model_dir, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                           crop_size=parse_size(FLAGS.crop_size, "crop_size", MIN_INPUT_SIZE),
                           mixed_precision=mixed, seed=seed, cache_examples=True)
    config = ICNetConfig.from_filter_scale(FLAGS.filter_scale, source.num_classes)
    tf_keras.utils.set_random_seed(seed)
    logging.info("run %s: %s, seed %d", name, "bfloat16" if mixed else "float32", seed)
    train(options, config, source, data={**data, "seed": seed})
    summary = read_summary(model_dir)
    val = make_data_source(data, "val")  # every run on the same val scenes
    score = evaluate(*load_weights(model_dir), val, FLAGS.eval_images)
    images = FLAGS.steps * FLAGS.batch_size
    record = {"name": name, "mixed_precision": mixed, "seed": seed,
              "miou": score["miou"], "eval_images": score["num_images"],
              "seconds": summary.get("seconds"), "curve": summary.get("curve", []),
              "images_per_second": images / summary["seconds"] if summary.get("seconds")
              else None}
    atomic_write_bytes(result_path, json.dumps(record, indent=1).encode())
    return record


def _totals(record: dict) -> np.ndarray:
    return np.array([[point[0], point[1]["total"]] for point in record["curve"]])


def steady_speed(record: dict) -> float:
    """The median images per second of the progress lines after the first two (tracing and
    the first checkpoint excluded); the whole run's when the curve has no speeds."""
    speeds = [point[2] for point in record["curve"][2:] if len(point) > 2]
    return float(np.median(speeds)) if speeds else record["images_per_second"]


def _curve_gap(a: dict, b: dict) -> float:
    """Mean absolute difference of the total loss over the last half of training."""
    ta, tb = _totals(a), _totals(b)
    steps = min(len(ta), len(tb))
    half = steps // 2
    return float(np.mean(np.abs(ta[half:steps, 1] - tb[half:steps, 1])))


def _plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for record in records:
        totals = _totals(record)
        axes.plot(totals[:, 0], totals[:, 1], label=f"{record['name']} (seed {record['seed']})")
    axes.set_xlabel("step")
    axes.set_ylabel("total loss")
    axes.set_title("training loss, float32 and bfloat16 mixed precision")
    axes.grid(True, alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _markdown(records: dict[str, dict], verdict: dict) -> str:
    from benchmarks.machine import machine_info

    machine = machine_info()
    lines = ["# bf16 mixed-precision training against float32", "",
             f"Machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores, ISA "
             f"flags {', '.join(machine['isa_flags'])}.", "",
             f"fs={FLAGS.filter_scale:g}, {FLAGS.steps} steps of batch {FLAGS.batch_size}, "
             f"{FLAGS.crop_size} crops; mIoU on {records['fp32']['eval_images']} val scenes.", "",
             "| run | precision | seed | images/s (steady) | images/s (whole run) | final total "
             "loss | mIoU |", "|---|---|---|---|---|---|---|"]
    for record in records.values():
        final = record["curve"][-1][1]["total"] if record["curve"] else float("nan")
        precision = "bfloat16" if record["mixed_precision"] else "float32"
        lines.append(f"| {record['name']} | {precision}"
                     f" | {record['seed']} | {steady_speed(record):.2f} | "
                     f"{record['images_per_second']:.2f} | {final:.4f} | "
                     f"{100 * record['miou']:.2f}% |")
    lines += ["", f"- speed: bf16 / the faster fp32 run = {verdict['speedup']:.2f}x images per "
              f"second (steady state: the median of the progress lines after the first two)",
              f"- loss curves, mean |difference| of the total loss over the last half: bf16 vs "
              f"fp32 {verdict['bf16_gap']:.4f}, fp32 seed {records['fp32']['seed']} vs seed "
              f"{records['fp32_other_seed']['seed']} {verdict['seed_gap']:.4f}",
              f"- mIoU: bf16 - fp32 = {100 * verdict['bf16_miou_delta']:+.2f} pt; fp32 other "
              f"seed - fp32 = {100 * verdict['seed_miou_delta']:+.2f} pt",
              f"- verdict: bf16 is {'within' if verdict['within_noise'] else 'NOT within'} the "
              f"seed-to-seed noise of float32 (its curve gap and mIoU difference are at most "
              f"the float32 runs' own)", "", "![loss curves](curves.png)", ""]
    return "\n".join(lines)


def _main() -> None:
    data = data_values()
    records = {name: _run(name, mixed, offset, data) for name, mixed, offset in RUNS}
    fp32, bf16, other = records["fp32"], records["bf16"], records["fp32_other_seed"]
    verdict = {  # against the faster float32 run: the conservative speedup
        "speedup": steady_speed(bf16) / max(steady_speed(fp32), steady_speed(other)),
        "bf16_gap": _curve_gap(bf16, fp32), "seed_gap": _curve_gap(other, fp32),
        "bf16_miou_delta": bf16["miou"] - fp32["miou"],
        "seed_miou_delta": other["miou"] - fp32["miou"],
    }
    verdict["within_noise"] = bool(
        verdict["bf16_gap"] <= verdict["seed_gap"]
        and abs(verdict["bf16_miou_delta"]) <= max(abs(verdict["seed_miou_delta"]), 0.01))
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    _plot(list(records.values()), os.path.join(FLAGS.output_dir, "curves.png"))
    atomic_write_bytes(os.path.join(FLAGS.output_dir, "results.json"),
                       json.dumps({"runs": records, "verdict": verdict}, indent=1).encode())
    atomic_write_bytes(os.path.join(FLAGS.output_dir, "RESULTS.md"),
                       _markdown(records, verdict).encode())
    print(_markdown(records, verdict))


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
