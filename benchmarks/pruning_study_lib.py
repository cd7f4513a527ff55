"""benchmarks.pruning_study's work: how much accuracy pruning costs, at equal training.

The steps (each finished one kept as a small JSON point in `<output>/points/`, so a rerun
redoes only what is missing, on this machine or a fresh one):

1. Scenes: synthetic street scenes at the deployment scale, written once in the Cityscapes
   layout (`<work>/scenes`); training crops them, evaluation reads them as Cityscapes (padded
   to 1025x2049 for 1024x2048 scenes: the deployment protocol).
2. The source: the full-width model trained its whole poly schedule (`source_steps`, the
   learning rate annealed to 0), evaluated every `chunk_steps`. The plateau rule is checked on
   that curve: met when the mIoU changed by less than `plateau_points` either way over the
   last fifth of training (the last evaluation against the latest at or before 80% of the
   steps; a fall is not a plateau), with the change's paired bootstrap interval. Its curve
   (val mIoU and loss per chunk) is kept.
3. The equal-budget control: the source fine-tuned for F = source steps / 10.
4. Pruned points: every keep x criterion, one shot, fine-tuned F steps; plus 0.75 -> 0.5
   progressive (l1, F/2 steps per stage).
5. Every point evaluated on the same val scenes, and every plan timed as an int8 TFLite under
   XNNPACK (`threads`, calibrated on training scenes, in a worker process) at the input size.
6. Targeted points: the source pruned to a latency budget on that same target (deploy.prune's
   search, l1, its cuts scored by the criterion alone or, with `search_images`, by the layer
   sensitivity measured on that many training scenes, once for every budget), fine-tuned F
   steps like every pruned point and timed interleaved with the uniform plan whose latency it
   targets (`keep0.5`) or alone (a budget in ms), its widths down to `min_keep` of the
   source's; an unreachable budget is recorded as such.
7. From-scratch controls: every pruned plan trained from scratch for the source's steps + F.
   Last: they alone do not start from the source's model, which lives in `<work>` only, so a
   run cut off here can be finished on a fresh machine.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import statistics
import time

import tf_keras
from absl import logging

from deploy.timing_worker import time_artifact
from benchmarks.machine import machine_info
from deploy import tflite_writer
from deploy.latency_table import Target
from deploy.prune_lib import Budget, PruneOptions, prune_into
from deploy.pruning import check_keep, model_groups, prune_plan
from deploy.verify import SourceImages
from icnet.checkpoint import latest_checkpoint, load_checkpoint_weights
from icnet.config import ICNetConfig
from icnet.data import make_source
from icnet.data.synthetic import write_cityscapes_layout
from icnet.evaluation import evaluate
from icnet.exits import OptionError
from icnet.fileio import atomic_write_bytes
from icnet.inference import build_inference_model
from icnet.metrics import paired_miou_interval
from icnet.profiling import model_profile
from icnet.training import TrainOptions, read_summary, train
from icnet.weights import initial_weights

# The criteria the headline compares at the narrow keeps (random: the control of l1).
HEADLINE_CRITERIA = ("l1", "random")
HEADLINE_KEEPS = (0.35, 0.25)
# Interleaved timings of a targeted plan and its uniform plan: the median of each over rounds.
TIMING_ROUNDS = 3
# The options that choose which points there are, not how any point is measured: a rerun may
# change them (add a keep, drop the budgets) and keep every finished point.
SELECTION = ("keeps", "criteria", "progressive", "scratch", "budgets", "min_keep",
             "search_images")
# Settings of earlier versions of the study (the source stopped early at a plateau): a study
# recorded with them cannot be continued.
RETIRED = ("max_steps", "min_chunks")


@dataclasses.dataclass(frozen=True)
class StudyOptions:
    """What the study trains and measures (defaults: the full study; on a 2-core AVX2 CPU
    about 5 hours of compute, 1.3 of them the source's)."""

    output_dir: str
    work_dir: str
    filter_scale: float = 2.0
    scene_size: tuple[int, int] = (1024, 2048)
    input_size: tuple[int, int] = (1025, 2049)
    train_scenes: int = 40
    val_scenes: int = 30
    crop_size: tuple[int, int] = (256, 512)
    batch_size: int = 4
    learning_rate: float = 2e-3
    finetune_learning_rate: float = 1e-3
    chunk_steps: int = 120
    source_steps: int = 1200
    plateau_points: float = 0.5
    keeps: tuple[float, ...] = (0.75, 0.5, 0.35, 0.25)
    criteria: tuple[str, ...] = ("l1", "l2", "bn_scale", "taylor", "random")
    progressive: bool = True
    scratch: bool = True
    threads: int = 2
    timing_runs: int = 5
    calibration_images: int = 8
    budgets: tuple[str, ...] = ("keep0.5", "50")
    round_to: int = 8
    min_keep: float = Budget.min_keep
    search_images: int = 0
    seed: int = 0

    def __post_init__(self):
        for name in ("train_scenes", "val_scenes", "chunk_steps", "source_steps",
                     "threads", "timing_runs", "calibration_images", "round_to"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.plateau_points <= 0:
            raise ValueError(f"plateau_points must be > 0, got {self.plateau_points}")
        if self.chunk_steps > 0.8 * self.source_steps:
            raise ValueError(f"chunk_steps must be at most 80% of source_steps "
                             f"({self.source_steps}) for the plateau rule to have an "
                             f"evaluation before the last fifth, got {self.chunk_steps}")
        check_keep(self.min_keep, "min_keep")
        if self.search_images < 0:
            raise ValueError(f"search_images must be >= 0, got {self.search_images}")
        for budget in self.budgets:
            budget_keep(budget, self.keeps)


def budget_keep(budget: str, keeps: tuple[float, ...]) -> float | None:
    """The uniform keep whose measured latency `budget` targets (`keep0.5`; `keep1` is the
    source's), or None for a budget in ms; ValueError naming the budget when it is neither."""
    try:
        if budget.startswith("keep"):
            keep = float(budget[4:])
            if keep == 1.0 or keep in keeps:
                return keep
        elif float(budget) > 0:
            return None
    except ValueError:
        pass
    raise ValueError(f"budgets: {budget!r} is neither keepK (K 1 or one of the keeps "
                     f"{', '.join(f'{k:g}' for k in keeps)}) nor a positive latency in ms")


class Study:
    """The study's state: its options, data and the points done so far."""

    def __init__(self, options: StudyOptions):
        self.options = options
        self.points_dir = os.path.join(options.output_dir, "points")
        self._check_same_study()
        self.scenes = os.path.join(options.work_dir, "scenes")
        self._train = self._val = None
        self.made = 0  # the points this run made

    def _check_same_study(self) -> None:
        """Records the options (but where things go) in the output's points and in the work
        directory; a rerun that measures otherwise into either is refused, so a study never
        mixes points or models of two setups. The SELECTION options may change: they only
        choose which points there are."""
        def settings(setup: dict) -> dict:
            setup = {k: v for k, v in setup.items() if k not in ("output_dir", "work_dir")}
            return json.loads(json.dumps(setup))  # tuples as lists, as read back

        def measurement(setup: dict) -> dict:
            return {k: v for k, v in setup.items() if k not in SELECTION}

        setup = settings(dataclasses.asdict(self.options))
        paths = {flag: os.path.join(folder, "setup.json") for flag, folder in
                 (("output_dir", self.points_dir), ("work_dir", self.options.work_dir))}
        for flag, path in paths.items():
            if not os.path.isfile(path):
                continue
            with open(path) as f:
                recorded = json.load(f)
            retired = sorted(set(RETIRED) & recorded.keys())
            if retired:
                raise OptionError(flag, f"{getattr(self.options, flag)} holds a study made by "
                                  f"an earlier version (its {', '.join(retired)}: the source "
                                  f"stopped early); it cannot be continued: use a new "
                                  f"--output_dir and --work_dir")
            # A setting added after the study began counts as its default there.
            recorded = measurement({**settings(dataclasses.asdict(StudyOptions("", ""))),
                                    **recorded})
            changed = sorted(k for k in measurement(setup).keys() | recorded.keys()
                             if setup.get(k) != recorded.get(k))
            if changed:
                raise OptionError(flag, f"{getattr(self.options, flag)} holds a study with "
                                  f"other settings ({', '.join(changed)}: "
                                  f"{', '.join(repr(recorded.get(k)) for k in changed)}); rerun "
                                  f"with those flags to continue it, or use a new --{flag}")
        for path in paths.values():
            if not os.path.isfile(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                atomic_write_bytes(path, json.dumps(setup, indent=1).encode())

    # --- bookkeeping -----------------------------------------------------------------------

    def point(self, name: str) -> dict | None:
        path = os.path.join(self.points_dir, f"{name}.json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def save_point(self, name: str, point: dict, begin: float) -> dict:
        """Keeps a finished point, with the seconds it took since `begin`."""
        point["seconds"] = round(point.get("seconds", 0) + time.time() - begin, 1)
        atomic_write_bytes(os.path.join(self.points_dir, f"{name}.json"),
                           json.dumps(point, indent=1).encode())
        logging.info("study: point %s done", name)
        self.made += 1
        return point

    def model_dir(self, name: str) -> str:
        return os.path.join(self.options.work_dir, name)

    # --- data ------------------------------------------------------------------------------

    def sources(self):
        """(train, val) sources of the scenes, written to disk on first use."""
        if self._train is None:
            marker = os.path.join(self.scenes, "complete.json")
            spec = {"size": list(self.options.scene_size), "train": self.options.train_scenes,
                    "val": self.options.val_scenes, "seed": self.options.seed}
            done = None
            if os.path.isfile(marker):
                with open(marker) as f:
                    done = json.load(f)
            if done != spec:
                logging.info("study: writing %d + %d scenes at %dx%d into %s",
                             spec["train"], spec["val"], *self.options.scene_size, self.scenes)
                write_cityscapes_layout(self.scenes, spec["train"], spec["val"],
                                        *self.options.scene_size, seed=self.options.seed)
                atomic_write_bytes(marker, json.dumps(spec).encode())
            self._train = make_source("cityscapes", "train", data_dir=self.scenes)
            self._val = make_source("cityscapes", "val", data_dir=self.scenes)
        return self._train, self._val

    def train_options(self, model_dir: str, steps: int, learning_rate: float) -> TrainOptions:
        o = self.options
        return TrainOptions(model_dir=model_dir, steps=steps, batch_size=o.batch_size,
                            crop_size=o.crop_size, learning_rate=learning_rate, seed=o.seed,
                            cache_examples=True, checkpoint_every=o.chunk_steps,
                            log_every=max(1, min(10, o.chunk_steps)))

    def scores(self, model: str) -> dict:
        """The model's val mIoU and its per-scene confusion matrices (for paired intervals)."""
        _, val = self.sources()
        tf_keras.backend.clear_session()
        result = evaluate(*load_checkpoint_weights(model), val, self.options.val_scenes,
                          per_image=True)
        return {"miou": result["miou"], "per_image_confusion": result["per_image_confusion"]}

    def cost(self, config: ICNetConfig) -> dict:
        profile = model_profile(config.replace(batch_norm=False), self.options.input_size)
        return {"params": profile["params"], "gflops": profile["gflops"]}

    # --- the steps -------------------------------------------------------------------------

    def source(self) -> dict:
        """Trains the full-width source its whole schedule in chunks, evaluating each chunk,
        and checks the plateau rule on the curve."""
        done = self.point("source")
        if done is not None:
            return done
        o = self.options
        train_source, _ = self.sources()
        model_dir = self.model_dir("source")
        config = ICNetConfig.from_filter_scale(o.filter_scale, train_source.num_classes)
        curve = []
        progress = os.path.join(model_dir, "study_curve.json")
        if os.path.isfile(progress):
            with open(progress) as f:
                curve = json.load(f)
        step = curve[-1]["step"] if curve else 0
        options = self.train_options(model_dir, o.source_steps, o.learning_rate)
        while step < o.source_steps:
            step = min(step + o.chunk_steps, o.source_steps)
            chunk_begin = time.time()
            train(dataclasses.replace(options, stop_at=step), config, train_source)
            curve.append({"step": step, **self.scores(model_dir),
                          "seconds": round(time.time() - chunk_begin, 1)})
            atomic_write_bytes(progress, json.dumps(curve).encode())
            logging.info("study: source at step %d of %d, val mIoU %.2f%%", step,
                         o.source_steps, 100 * curve[-1]["miou"])
        summary = read_summary(model_dir)
        change = last_fifth(curve)
        return self.save_point("source", {
            "name": "source", "kind": "source", "keep": 1.0, "criterion": None,
            "schedule": None, "steps": step, "miou": curve[-1]["miou"],
            "per_image_confusion": curve[-1]["per_image_confusion"],
            "curve": [{k: v for k, v in c.items() if k != "per_image_confusion"}
                      for c in curve],
            "loss_curve": [[point[0], point[1]["total"]] for point in summary.get("curve", [])],
            "last_fifth": change, "plateau_met": plateaued(change, o.plateau_points),
            # The chunks' own time, earlier runs' included.
            "seconds": sum(c.get("seconds", 0) for c in curve), **self.cost(config)},
            time.time())

    def source_model(self) -> str:
        """The finished source's model directory, for a missing point that starts from it."""
        model_dir = self.model_dir("source")
        if latest_checkpoint(model_dir) is None:
            raise OptionError("work_dir", f"{self.points_dir} records a finished source but "
                              f"{model_dir} holds no checkpoint of it; the missing points "
                              f"pruned or fine-tuned from it need that same source: rerun "
                              f"with the --work_dir that trained it, leave them out (the "
                              f"targeted points: --budgets ''), or start over in a new "
                              f"--output_dir")
        return model_dir

    def finetune_steps(self, source: dict) -> int:
        return max(1, source["steps"] // 10)

    def control(self, source: dict) -> dict:
        """The source fine-tuned for F steps: what every pruned point is compared with."""
        done = self.point("control")
        if done is not None:
            return done
        begin = time.time()
        train_source, _ = self.sources()
        steps = self.finetune_steps(source)
        model_dir = self.model_dir("control")
        config, weights = load_checkpoint_weights(self.source_model())
        train(self.train_options(model_dir, steps, self.options.finetune_learning_rate),
              config, train_source, init_weights=(weights, "the study source"))
        return self.save_point("control", {
            "name": "control", "kind": "control", "keep": 1.0, "criterion": None,
            "schedule": None, "steps": steps, **self.scores(model_dir),
            **self.cost(config)}, begin)

    def pruned(self, source: dict, schedule: tuple[float, ...], criterion: str) -> dict:
        """One pruned point: pruned from the source by `criterion`, fine-tuned F steps in all
        (split evenly over the stages of a progressive schedule)."""
        name = "pruned_" + "_".join(f"{k:g}" for k in schedule) + f"_{criterion}"
        done = self.point(name)
        if done is not None:
            return done
        begin = time.time()
        train_source, val = self.sources()
        steps = self.finetune_steps(source)
        per_stage = max(1, steps // len(schedule))
        output = self.model_dir(name)
        tf_keras.backend.clear_session()
        report = prune_into(
            self.source_model(), output,
            PruneOptions(schedule=schedule, criterion=criterion,
                         finetune=self.train_options("", per_stage,
                                                     self.options.finetune_learning_rate),
                         eval_images=0, input_size=self.options.input_size),
            train_source, val, os.path.join(self.options.work_dir, f".{name}.work"))
        config, _ = load_checkpoint_weights(output)
        return self.save_point(name, {
            "name": name, "kind": "pruned", "keep": schedule[-1], "criterion": criterion,
            "schedule": list(schedule), "steps": per_stage * len(schedule),
            **self.scores(output), "plan": config.plan,
            "params": report.final.measure.params, "gflops": report.final.measure.gflops},
            begin)

    def scratch(self, source: dict, keep: float) -> dict:
        """The pruned plan at `keep` trained from scratch for the source's steps + F."""
        name = f"scratch_{keep:g}"
        done = self.point(name)
        if done is not None:
            return done
        begin = time.time()
        train_source, _ = self.sources()
        config = plan_config(self.options, train_source.num_classes, keep)
        steps = source["steps"] + self.finetune_steps(source)
        model_dir = self.model_dir(name)
        tf_keras.utils.set_random_seed(self.options.seed)
        train(self.train_options(model_dir, steps, self.options.learning_rate), config,
              train_source)
        return self.save_point(name, {
            "name": name, "kind": "scratch", "keep": keep, "criterion": None,
            "schedule": None, "steps": steps, **self.scores(model_dir),
            "plan": config.plan, **self.cost(config)}, begin)

    def latency(self, keep: float) -> dict:
        """The int8 TFLite XNNPACK latency of the plan at `keep` (1.0: the source's)."""
        name = f"latency_{keep:g}"
        done = self.point(name)
        if done is not None:
            return done
        begin = time.time()
        train_source, _ = self.sources()
        o = self.options
        config = plan_config(o, train_source.num_classes, keep).replace(batch_norm=False)
        tf_keras.backend.clear_session()
        # The plan's latency does not depend on the weights: initial ones, calibrated.
        path = self.int8_tflite(name, config, initial_weights(config, o.seed))
        result = self.time_tflite(path)
        return self.save_point(name, {"name": name, "kind": "latency", "keep": keep,
                                      "median_s": result["median_s"],
                                      "p90_s": result["p90_s"], "threads": o.threads,
                                      "cpu": timing_cpu()}, begin)

    def int8_tflite(self, name: str, config: ICNetConfig, weights) -> str:
        """`<work>/<name>.tflite`: the model as int8 TFLite, calibrated on training scenes."""
        train_source, _ = self.sources()
        o = self.options
        model = build_inference_model(config, weights, o.input_size)
        calibration = SourceImages(train_source, o.calibration_images, o.input_size)
        path = os.path.join(o.work_dir, f"{name}.tflite")
        tflite_writer.write(tflite_writer.convert(model, o.input_size, "int8", calibration),
                            path)
        return path

    def time_tflite(self, path: str) -> dict:
        """The timing of a .tflite under XNNPACK at the study's threads (in a worker)."""
        result = time_artifact(path, "tflite_xnnpack", self.options.threads, warmup=2,
                               runs=self.options.timing_runs)
        if result.get("status") != "ok":
            raise RuntimeError(f"timing {path} failed: {result.get('error')}")
        return result

    def targeted(self, source: dict, budget: str, latencies: dict) -> dict:
        """The source pruned to a latency budget on the study's int8 XNNPACK target (the
        measured latency of the uniform `keepK` plan, or ms), fine-tuned F steps, evaluated and
        timed interleaved with that uniform plan (TIMING_ROUNDS rounds, the median of each)."""
        o = self.options
        keep = budget_keep(budget, o.keeps)
        name = f"targeted_{budget}" if keep is not None else f"targeted_{float(budget):g}ms"
        if o.min_keep != Budget.min_keep:  # another search space: another point
            name += f"_min{o.min_keep:g}"
        if o.search_images:  # another scoring of the cuts: another point
            name += f"_s{o.search_images}"
        done = self.point(name)
        if done is not None:
            return done
        begin = time.time()
        train_source, _ = self.sources()
        target_ms = (1e3 * latencies[keep]["median_s"] if keep is not None else float(budget))
        point = {"name": name, "kind": "targeted", "budget": budget, "uniform_keep": keep,
                 "target_ms": round(target_ms, 3), "min_keep": o.min_keep,
                 "search_images": o.search_images}
        output = self.model_dir(name)
        tf_keras.backend.clear_session()
        options = PruneOptions(
            schedule=(1.0,), round_to=o.round_to, criterion="l1",
            finetune=self.train_options("", self.finetune_steps(source),
                                        o.finetune_learning_rate),
            eval_images=0, input_size=o.input_size,
            budget=Budget(latency_ms=point["target_ms"],
                          target=Target("tflite_xnnpack", "int8", o.threads, o.input_size),
                          min_keep=o.min_keep, search_images=o.search_images,
                          sensitivity_file=os.path.join(
                              o.work_dir, f"sensitivity_min{o.min_keep:g}_s{o.search_images}"
                                          ".json")))
        try:  # the cuts are scored on training scenes: the val scenes judge the result
            report = prune_into(self.source_model(), output, options, train_source,
                                train_source, os.path.join(o.work_dir, f".{name}.work"))
        except OptionError as e:
            if e.option != "target_latency_ms":
                raise
            logging.info("study: %s: %s", name, e.message)
            return self.save_point(name, {**point, "status": "unreachable",
                                          "message": e.message}, begin)
        config, weights = load_checkpoint_weights(output)
        paths = [self.int8_tflite(name, config, weights)]
        if keep is not None:
            uniform = os.path.join(o.work_dir, f"latency_{keep:g}.tflite")
            if not os.path.isfile(uniform):
                plan = plan_config(o, train_source.num_classes, keep).replace(batch_norm=False)
                uniform = self.int8_tflite(f"latency_{keep:g}", plan,
                                           initial_weights(plan, o.seed))
            paths.append(uniform)
        rounds = [[self.time_tflite(path)["median_s"] for path in paths]
                  for _ in range(TIMING_ROUNDS)]
        medians = [statistics.median(r[i] for r in rounds) for i in range(len(paths))]
        found = report.budget
        return self.save_point(name, {
            **point, "status": "ok", "steps": self.finetune_steps(source),
            **self.scores(output), "plan": config.plan,
            "params": report.final.measure.params, "gflops": report.final.measure.gflops,
            "estimate_ms": found.estimate, "search_ms": found.measured_ms,
            "final_ms": found.final_ms, "rounds": found.rounds,
            "median_s": medians[0], "uniform_median_s": medians[1] if keep is not None else None,
            "cpu": timing_cpu()}, begin)


def timing_cpu() -> str:
    """The CPU a latency was measured on: its model and the ISA flags that choose kernels."""
    info = machine_info()
    flags = [f for f in info["isa_flags"] if f == "avx2" or f.startswith(("avx512", "amx"))]
    return f"{info['cpu_model']} ({' '.join(flags) or 'no AVX2'})"


def timed_on(timed: list[dict]) -> str:
    """Where the study's latencies were measured, for STUDY.md (several CPUs: named apart)."""
    cpus: dict[str, list[str]] = {}
    for p in timed:
        if "median_s" in p:
            cpus.setdefault(p.get("cpu") or "a CPU not recorded", []).append(p["name"])
    if len(cpus) <= 1:
        return f"on {next(iter(cpus), 'no CPU')}"
    return ("on several CPUs, not comparable with each other: " +
            "; ".join(f"{cpu} ({', '.join(names)})" for cpu, names in cpus.items()))


def plan_config(options: StudyOptions, num_classes: int, keep: float) -> ICNetConfig:
    """The uniform-keep plan of the source's width (what every criterion prunes to)."""
    config = ICNetConfig.from_filter_scale(options.filter_scale, num_classes)
    if keep >= 1.0:
        return config
    return config.replace(plan=prune_plan(config.plan, model_groups(config), keep))


def last_fifth(curve: list[dict]) -> dict | None:
    """How the val mIoU changed over the last fifth of the steps: the last evaluation against
    the latest at or before 80% of its steps, in points (`gain`, from `from_step`), with its
    95% paired bootstrap interval when both hold per-scene matrices; None when no evaluation
    comes before the last fifth."""
    last = curve[-1]
    earlier = [p for p in curve if p["step"] <= 0.8 * last["step"]]
    if not earlier:
        return None
    first = earlier[-1]
    change = {"from_step": first["step"], "gain": 100 * (last["miou"] - first["miou"])}
    bounds = paired_interval(last, first)
    if bounds is not None:
        change["interval"] = bounds
    return change


def plateaued(change: dict | None, plateau_points: float) -> bool:
    """The plateau rule: the mIoU changed by less than `plateau_points` either way over the
    last fifth of training (a fall is no plateau: the curve is noisy or unstable there)."""
    return change is not None and abs(change["gain"]) < plateau_points


def run_study(options: StudyOptions) -> dict:
    """Runs (or resumes) every step; returns the points and writes STUDY.md and the plots."""
    begin = time.time()
    study = Study(options)
    source = study.source()
    points = [source, study.control(source)]
    one_shot = [(keep, criterion) for keep in options.keeps for criterion in options.criteria]
    # The headline points first (keep 0.5, then l1 and random at the narrow keeps), so that a
    # run cut short has answered the most; the report lists them in the usual order.
    for keep, criterion in sorted(one_shot, key=lambda point: (
            point[0] != 0.5,
            point[1] not in HEADLINE_CRITERIA or point[0] not in HEADLINE_KEEPS)):
        study.pruned(source, (keep,), criterion)
    points += [study.pruned(source, (keep,), criterion) for keep, criterion in one_shot]
    if options.progressive and 0.75 in options.keeps and 0.5 in options.keeps:
        points.append(study.pruned(source, (0.75, 0.5), "l1"))
    latencies = {p["keep"]: p for p in (study.latency(keep) for keep in (1.0, *options.keeps))}
    targeted = [study.targeted(source, budget, latencies) for budget in options.budgets]
    # The from-scratch controls last (step 7).
    if options.scratch:
        for keep in sorted(options.keeps, key=lambda keep: keep != 0.5):
            study.scratch(source, keep)
        points += [study.scratch(source, keep) for keep in options.keeps]
    results = {"points": points, "latency": latencies, "targeted": targeted,
               "options": dataclasses.asdict(options)}
    write_outputs(results, options.output_dir, (study.made, time.time() - begin))
    return results


# --------------------------------------------------------------------------------------------
# The report.


def _ms(latencies: dict, keep: float) -> str:
    point = latencies.get(keep)
    return "n/a" if point is None else f"{point['median_s'] * 1e3:.1f} ms"


def paired_interval(a: dict, b: dict) -> list[float] | None:
    """[low, high]: the 95% paired bootstrap interval, in points, of a's mIoU minus b's over
    the val scenes, when both hold their per-scene matrices of the same scenes (else None)."""
    if not (a.get("per_image_confusion") and b.get("per_image_confusion")):
        return None
    low, high = paired_miou_interval(a["per_image_confusion"], b["per_image_confusion"])
    return [100 * low, 100 * high]


def bracket(bounds: list[float] | None) -> str:
    """" [low, high]" of an interval in points, or nothing."""
    return "" if bounds is None else f" [{bounds[0]:+.2f}, {bounds[1]:+.2f}]"


def interval(a: dict, b: dict) -> str:
    """The bracketed paired interval of a's mIoU minus b's (see paired_interval)."""
    return bracket(paired_interval(a, b))


def _drop(points: list[dict], keep: float, criterion: str) -> float | None:
    """The mIoU points a one-shot pruned point loses against the equal-budget control."""
    control = next(p for p in points if p["kind"] == "control")
    point = next((p for p in points if p["kind"] == "pruned" and p["keep"] == keep
                  and p["criterion"] == criterion and len(p["schedule"]) == 1), None)
    return None if point is None else 100 * (control["miou"] - point["miou"])


def headline(points: list[dict]) -> list[str]:
    """The study's answers: the drop at keep 0.5 (l1 and the best criterion) against the goals
    (at most 2 points, and 1 for the best), and random against l1 at the small keeps."""
    lines = ["## Headline", ""]
    criteria = sorted({p["criterion"] for p in points if p["kind"] == "pruned"})
    drops = {c: _drop(points, 0.5, c) for c in criteria}
    drops = {c: d for c, d in drops.items() if d is not None}
    if "l1" in drops:
        lines.append(f"- keep 0.5, l1: {drops['l1']:+.2f} points lost against the equal-budget "
                     f"control (goal: at most 2; {'met' if drops['l1'] <= 2 else 'NOT met'})")
    if drops:
        best = min(drops, key=drops.get)
        lines.append(f"- keep 0.5, best criterion {best}: {drops[best]:+.2f} points lost (goal: "
                     f"at most 1; {'met' if drops[best] <= 1 else 'NOT met'})")
    for keep in HEADLINE_KEEPS:
        l1, random = _drop(points, keep, "l1"), _drop(points, keep, "random")
        if l1 is not None and random is not None:
            lines.append(f"- keep {keep:g}: random loses {random:+.2f} points, l1 {l1:+.2f}: "
                         f"random is {'worse' if random > l1 else 'NOT worse'} than l1")
    return lines


def plateau_text(source: dict, plateau_points: float) -> str:
    """The plateau rule and how the source's curve met it (as its point records)."""
    change = source["last_fifth"]
    return (f"plateau rule: the val mIoU changes by less than {plateau_points:g} point either "
            f"way over the last fifth of training: {'met' if source['plateau_met'] else 'NOT met'}"
            f", {change['gain']:+.2f} points{bracket(change.get('interval'))} from step "
            f"{change['from_step']} to {source['steps']}")


def validity(points: list[dict], plateau_points: float) -> list[str]:
    """Warnings on what the drops measure: not evidence when the source did not plateau (still
    rising, or unstable); and when a narrower plan trained from scratch (the same total steps
    as the control) beats the full-width control, that the width buys nothing at this budget:
    the source is under-trained (no plateau) or, plateaued, gains nothing from its width."""
    source = next(p for p in points if p["kind"] == "source")
    control = next(p for p in points if p["kind"] == "control")
    warnings = []
    if not source["plateau_met"]:
        gain = source["last_fifth"]["gain"]
        warnings += [f"**Not evidence: the source did not plateau**: its val mIoU "
                     f"{'rose' if gain >= 0 else 'fell'} {abs(gain):.2f} points over the last "
                     f"fifth of training (the rule: less than {plateau_points:g} either way); "
                     f"the next run: a longer source (`--source_steps`) in a new "
                     f"`--output_dir` and `--work_dir`.", ""]
    beaten = [p for p in points if p["kind"] == "scratch" and p["miou"] > control["miou"]]
    if beaten:
        best = max(beaten, key=lambda p: p["miou"])
        lead = (f"the keep {best['keep']:g} plan trained from scratch for the same total steps "
                f"scores {100 * best['miou']:.2f}%, above the full-width control's "
                f"{100 * control['miou']:.2f}% "
                f"({100 * (best['miou'] - control['miou']):+.2f} pt{interval(best, control)}; "
                f"{len(beaten)} of the scratch plans beat it)")
        if source["plateau_met"]:
            warnings += [f"**The width buys nothing at this budget**: {lead}, though the "
                         "source plateaued: on this data the full width does not raise "
                         "accuracy, so the drops below are what pruning and its short "
                         "fine-tune lose against the trained source (what a user who has one "
                         "pays), not what the narrower width costs; trained from scratch, the "
                         "narrower plan does better.", ""]
        else:
            warnings += [f"**Not evidence of what pruning costs**: {lead}: the source is not "
                         "trained at this budget, so the drops below compare under-trained "
                         "models.", ""]
    return warnings


def study_markdown(results: dict, run: tuple[int, float]) -> str:
    """STUDY.md: the table (every point, its drop against the equal-budget control), the
    source's plateau, and the plots; `run`: the points the run writing it made, its seconds."""
    points, latencies = results["points"], results["latency"]
    source = next(p for p in points if p["kind"] == "source")
    control = next(p for p in points if p["kind"] == "control")
    scratch = {p["keep"]: p for p in points if p["kind"] == "scratch"}
    o = results["options"]
    warning, answers = validity(points, o["plateau_points"]), headline(points)
    if not source["plateau_met"]:
        answers[0] += " (not evidence, see above)"
    timed = [*points, *latencies.values(), *(results.get("targeted") or [])]
    total = sum(p.get("seconds", 0) for p in timed)
    lines = ["# Pruning study: what pruning costs at equal training", "",
             f"The full-width (fs={o['filter_scale']:g}) source trained on "
             f"{'x'.join(map(str, o['crop_size']))} crops of {o['train_scenes']} synthetic "
             f"scenes at {'x'.join(map(str, o['scene_size']))}, batch {o['batch_size']}, "
             f"{source['steps']} steps (its whole poly schedule), evaluated every "
             f"{o['chunk_steps']} steps ({plateau_text(source, o['plateau_points'])}). Every "
             f"pruned point is fine-tuned {control['steps']} steps (a tenth of the source's) and "
             f"compared with the equal-budget control, the source fine-tuned the same "
             f"{control['steps']} steps ({100 * control['miou']:.2f}%). mIoU on "
             f"{o['val_scenes']} val scenes at {'x'.join(map(str, o['input_size']))}; latency "
             f"of the plan as int8 TFLite under XNNPACK, {o['threads']} threads, median of "
             f"{o['timing_runs']}, {timed_on(timed)}. Wall time: "
             f"{total / 60:.1f} min, the sum of every point's own time, in whichever run made "
             f"it; the run that wrote this report made "
             f"{run[0]} of its {len(timed)} points in {run[1] / 60:.1f} min. In brackets "
             f"after a difference: its 95% paired bootstrap interval over the val scenes "
             f"(the same scenes resampled for both models), the evaluation's noise (not the "
             f"training's: one seed); points made before the study kept per-scene matrices "
             f"have none.", "", *warning, *answers, "",
             "| keep | criterion | schedule | params | GFLOPs | int8 latency | mIoU | vs "
             "equal-budget control | vs from scratch (same plan, same total steps) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        schedule = ("one shot" if p["schedule"] and len(p["schedule"]) == 1 else
                    " -> ".join(f"{k:g}" for k in p["schedule"]) if p["schedule"] else p["kind"])
        delta = (f"{100 * (p['miou'] - control['miou']):+.2f} pt{interval(p, control)}"
                 if p["kind"] == "pruned" else "–")
        versus = scratch.get(p["keep"]) if p["kind"] == "pruned" else None
        scratch_text = (f"{100 * (p['miou'] - versus['miou']):+.2f} pt{interval(p, versus)} "
                        f"({100 * versus['miou']:.2f}%)" if versus else "–")
        lines.append(f"| {p['keep']:g} | {p['criterion'] or p['kind']} | {schedule} | "
                     f"{p['params']:,} | {p['gflops']:.2f} | {_ms(latencies, p['keep'])} | "
                     f"{100 * p['miou']:.2f}% | {delta} | {scratch_text} |")
    lines += targeted_markdown(results)
    lines += ["", "![mIoU against int8 latency](pareto.png)", "",
              "![the source's training](source_curve.png)", ""]
    return "\n".join(lines)


def targeted_markdown(results: dict) -> list[str]:
    """The targeted points: each budget, what the search estimated and measured, the latency
    after the fine-tune and interleaved with its uniform plan, and the mIoU against the uniform
    l1 point of the same keep (same fine-tune) and the equal-budget control."""
    targeted = results.get("targeted") or []
    if not targeted:
        return []
    points = results["points"]
    control = next(p for p in points if p["kind"] == "control")
    lines = ["", "## Latency budgets", "",
             "The source pruned to a latency budget on the same int8 XNNPACK target "
             "(`deploy.prune --target_latency_ms`: per-group widths, l1, cuts scored by the "
             "criterion alone or, where the budget says so, by the layer sensitivity measured "
             "on training scenes; the search measuring each round's plan), fine-tuned as many "
             "steps as every pruned point. Latency: the search's measurement of its plan, the "
             "fine-tuned model's (the pruned model as deploy.prune reports it), and the median "
             f"of {TIMING_ROUNDS} rounds interleaved with the uniform plan it targets.", "",
             "| budget | target | params | GFLOPs | search: estimate / measured | after the "
             "fine-tune | interleaved: targeted / uniform | mIoU | vs uniform l1, same keep "
             "latency | vs equal-budget control |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in targeted:
        search = ([] if t.get("min_keep", Budget.min_keep) == Budget.min_keep
                  else [f"min keep {t['min_keep']:g}"])
        if t.get("search_images"):
            search.append(f"sensitivity on {t['search_images']} training scenes")
        budget = t["budget"] + (f" ({'; '.join(search)})" if search else "")
        if t["status"] != "ok":
            lines.append(f"| {budget} | {t['target_ms']:.1f} ms | {t['status']}: "
                         f"{t['message']} |||||||")
            continue
        keep = t["uniform_keep"]
        uniform = next((p for p in points if p["kind"] == "pruned" and p["keep"] == keep
                        and p["criterion"] == "l1" and len(p["schedule"]) == 1), None)
        interleaved = (f"{t['median_s'] * 1e3:.1f} / {t['uniform_median_s'] * 1e3:.1f} ms"
                       if t["uniform_median_s"] else f"{t['median_s'] * 1e3:.1f} ms")
        versus = (f"{100 * (t['miou'] - uniform['miou']):+.2f} pt{interval(t, uniform)} "
                  f"({100 * uniform['miou']:.2f}%)" if uniform else "–")
        within = "within 5%" if t["final_ms"] <= 1.05 * t["target_ms"] else "over by more than 5%"
        lines.append(f"| {budget} | {t['target_ms']:.1f} ms | {t['params']:,} | "
                     f"{t['gflops']:.2f} | {t['estimate_ms']:.1f} / {t['search_ms']:.1f} ms | "
                     f"{t['final_ms']:.1f} ms ({within}) | {interleaved} | "
                     f"{100 * t['miou']:.2f}% | {versus} | "
                     f"{100 * (t['miou'] - control['miou']):+.2f} pt{interval(t, control)} |")
    return lines


def _save(figure, path: str) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def write_outputs(results: dict, output_dir: str, run: tuple[int, float]) -> None:
    """STUDY.md, results.json, pareto.png (mIoU against latency, one series per criterion) and
    source_curve.png (val mIoU and loss against steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, latencies = results["points"], results["latency"]
    figure, axes = plt.subplots(figsize=(8, 5))
    series = {}
    for p in points:
        key = p["criterion"] if p["kind"] == "pruned" else p["kind"]
        if p["kind"] == "pruned" and len(p["schedule"]) > 1:
            key = "l1 progressive"
        if p["keep"] in latencies:
            series.setdefault(key, []).append((latencies[p["keep"]]["median_s"] * 1e3,
                                               100 * p["miou"]))
    for t in results.get("targeted") or []:
        if t["status"] == "ok":
            series.setdefault("targeted (latency budget)", []).append(
                (t["median_s"] * 1e3, 100 * t["miou"]))
    for key, values in sorted(series.items()):
        values.sort()
        axes.plot([v[0] for v in values], [v[1] for v in values], "o-" if len(values) > 1
                  else "s", label=key)
    axes.set_xlabel("int8 TFLite XNNPACK latency (ms)")
    axes.set_ylabel("mIoU (%)")
    axes.set_title("pruned points and controls: mIoU against latency")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, os.path.join(output_dir, "pareto.png"))

    source = next(p for p in points if p["kind"] == "source")
    figure, left = plt.subplots(figsize=(8, 5))
    left.plot([c["step"] for c in source["curve"]], [100 * c["miou"] for c in source["curve"]],
              "o-", color="tab:blue", label="val mIoU")
    left.set_xlabel("step")
    left.set_ylabel("val mIoU (%)", color="tab:blue")
    if source["loss_curve"]:
        right = left.twinx()
        right.plot([c[0] for c in source["loss_curve"]], [c[1] for c in source["loss_curve"]],
                   color="tab:gray", alpha=0.6, label="training loss")
        right.set_ylabel("total training loss", color="tab:gray")
    left.set_title("the source's training (its whole poly schedule)")
    left.grid(True, alpha=0.3)
    _save(figure, os.path.join(output_dir, "source_curve.png"))
    # The per-scene matrices stay in points/.
    summary = {**results, **{key: [{k: v for k, v in p.items() if k != "per_image_confusion"}
                                   for p in results[key]] for key in ("points", "targeted")}}
    atomic_write_bytes(os.path.join(output_dir, "results.json"),
                       json.dumps(summary, indent=1).encode())
    atomic_write_bytes(os.path.join(output_dir, "STUDY.md"),
                       study_markdown(results, run).encode())
    logging.info("study: wrote %s", os.path.join(output_dir, "STUDY.md"))
