r"""The pruning study: accuracy against latency for every keep and criterion, at equal
training budget, from a source trained its whole schedule and checked for a plateau
(benchmarks.pruning_study_lib).

Examples:
  # The full study (about 5 hours of compute on 2 AVX2 cores; rerun the same command to
  # continue where it stopped):
  python -m benchmarks.pruning_study --output_dir reports/pruning
  # A quick run on a tiny model (make test runs it with --budgets keep1,0.001 --round_to 2):
  python -m benchmarks.pruning_study --output_dir /tmp/study --work_dir /tmp/study_work \
      --filter_scale 0.125 --scene_size 192x256 --input_size 193x257 --train_scenes 8 \
      --val_scenes 2 --crop_size 161x161 --batch_size 2 --chunk_steps 2 --source_steps 4 \
      --keeps 0.5 --criteria l1,random --noprogressive --threads 1 --budgets ""

Writes --output_dir/STUDY.md (every point: keep, criterion, schedule, params, GFLOPs, int8
latency, mIoU, the change against the equal-budget control and against the same plan trained
from scratch; the targeted plans of --budgets against their uniform plans), pareto.png,
source_curve.png, results.json, and one JSON per finished point in
points/ (commit them: a rerun, here or on a fresh machine, redoes only what is missing; the
missing points pruned or fine-tuned from the source need its model in --work_dir).
Models and scenes go to --work_dir. SIGINT/SIGTERM stop it (code 75).
"""

from __future__ import annotations

from absl import app, flags

from benchmarks.pruning_study_lib import StudyOptions, run_study
from icnet import exits
from icnet.cli import parse_choices, parse_size
from icnet.model import MIN_INPUT_SIZE
from deploy.pruning import CRITERIA, parse_schedule

defaults = StudyOptions(output_dir="", work_dir="")
flags.DEFINE_string("output_dir", "reports/pruning", "Where STUDY.md, the plots and the "
                    "points go.")
flags.DEFINE_string("work_dir", "runs/pruning_study", "Where the scenes and models go.")
flags.DEFINE_float("filter_scale", defaults.filter_scale, "Width of the source.")
flags.DEFINE_string("scene_size", "x".join(map(str, defaults.scene_size)),
                    "HxW of the synthetic scenes (train and val).")
flags.DEFINE_string("input_size", "x".join(map(str, defaults.input_size)),
                    "HxW at which FLOPs and the int8 latency are measured.")
flags.DEFINE_integer("train_scenes", defaults.train_scenes, "Training scenes.")
flags.DEFINE_integer("val_scenes", defaults.val_scenes, "Val scenes for every mIoU.")
flags.DEFINE_string("crop_size", "x".join(map(str, defaults.crop_size)), "Training crop HxW.")
flags.DEFINE_integer("batch_size", defaults.batch_size, "Batch size.")
flags.DEFINE_integer("chunk_steps", defaults.chunk_steps, "Source steps between evaluations.")
flags.DEFINE_integer("source_steps", defaults.source_steps, "The source's training steps (its "
                     "poly schedule's length; a tenth of it is every fine-tune).")
flags.DEFINE_float("plateau_points", defaults.plateau_points, "The plateau: the val mIoU "
                   "changes by less than this many points either way over the last fifth of "
                   "the source's training.")
flags.DEFINE_string("keeps", ",".join(f"{k:g}" for k in defaults.keeps), "Uniform keeps.")
flags.DEFINE_string("criteria", ",".join(defaults.criteria), "Importance criteria.")
flags.DEFINE_bool("progressive", defaults.progressive, "Also 0.75 -> 0.5 progressive (l1).")
flags.DEFINE_bool("scratch", defaults.scratch, "Also every plan trained from scratch.")
flags.DEFINE_integer("threads", defaults.threads, "Threads of the latency measurements.")
flags.DEFINE_string("budgets", ",".join(defaults.budgets), "Latency budgets of the targeted "
                    "points: keepK (the uniform keep-K plan's measured latency) or ms; empty: "
                    "none.")
flags.DEFINE_integer("round_to", defaults.round_to, "Width multiple of the targeted plans.")
flags.DEFINE_float("min_keep", defaults.min_keep, "The narrowest fraction of a group's width "
                   "the targeted plans may choose.")
flags.DEFINE_integer("search_images", defaults.search_images, "Training scenes on which the "
                     "targeted plans' search measures the layer sensitivity that scores its "
                     "cuts (once for all budgets); 0: the criterion alone scores them.")
flags.DEFINE_integer("seed", defaults.seed, "Seed of the scenes, initialisation and data.")
FLAGS = flags.FLAGS


def _main() -> None:
    options = StudyOptions(
        output_dir=FLAGS.output_dir, work_dir=FLAGS.work_dir, filter_scale=FLAGS.filter_scale,
        scene_size=parse_size(FLAGS.scene_size, "scene_size", MIN_INPUT_SIZE - 1),
        input_size=parse_size(FLAGS.input_size, "input_size", MIN_INPUT_SIZE),
        train_scenes=FLAGS.train_scenes, val_scenes=FLAGS.val_scenes,
        crop_size=parse_size(FLAGS.crop_size, "crop_size", MIN_INPUT_SIZE),
        batch_size=FLAGS.batch_size, chunk_steps=FLAGS.chunk_steps,
        source_steps=FLAGS.source_steps, plateau_points=FLAGS.plateau_points,
        keeps=tuple(sorted(set(parse_schedule(FLAGS.keeps)), reverse=True)),
        criteria=parse_choices(FLAGS.criteria, tuple(CRITERIA), "criteria"),
        progressive=FLAGS.progressive, scratch=FLAGS.scratch, threads=FLAGS.threads,
        budgets=tuple(b for b in FLAGS.budgets.split(",") if b), round_to=FLAGS.round_to,
        min_keep=FLAGS.min_keep, search_images=FLAGS.search_images, seed=FLAGS.seed)
    run_study(options)


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main, {"schedule": "keeps"}))
