"""deploy.prune's work: prune a trained model in stages, fine-tune after each, measure, and
write the result as a new model directory.

`prune_model` publishes the output directory atomically (`deploy.staging`); `prune_into` does
the stages into any directory (deploy.export prunes into its staging directory). Fine-tunes run
in a work directory beside the output (`.<name>.work/stage_<n>/`), which a SIGINT/SIGTERM,
a crash or an I/O error leaves in place: rerunning the same command resumes the interrupted
fine-tune from its last checkpoint and skips finished stages (a different command, e.g. other
keeps or fine-tuning settings, starts over). The work directory is removed once the output is
published.

The output holds a checkpoint and `plan.json` (every other tool loads it without being told
the widths), `prune_report.json` (params and FLOPs of the BN-merged model at the input size,
and mIoU, for the source and every stage) and each stage's fine-tuning summaries under
`finetune/stage_<n>/`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Mapping

from absl import logging

from deploy import budget as budget_search
from deploy.latency_table import LatencyTable, Target, default_table_path, measure_model
from deploy.pruning import (CRITERIA, Evidence, PlanCost, check_keep, check_schedule,
                            check_target_plan, group_keeps, model_groups, override_matches, prune,
                            prune_plan, save_checkpoint)
from deploy.report import (PRUNE_REPORT_FILENAME, BudgetReport, ControlReport, FinetuneReport,
                           Measure, PruneReport, PruneStage, from_dict, to_dict)
from deploy.sensitivity import Row, criterion_rows
from deploy.sensitivity import measure as measure_sensitivity
from deploy.staging import Staging
from icnet.checkpoint import latest_checkpoint, load_checkpoint_weights, model_dir_of
from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.data import Source
from icnet.evaluation import evaluate
from icnet.exits import OptionError
from icnet.fileio import atomic_write_bytes, holds
from icnet.inference import load_weights
from icnet.profiling import model_profile
from icnet.training import TrainOptions, read_summary, train
from icnet.weights import WeightDict, initial_weights

JOB_FILENAME = "job.json"
RESULT_FILENAME = "result.json"


@dataclasses.dataclass(frozen=True)
class Budget:
    """What to prune to instead of keeps: a latency on a target runtime, or GFLOPs.

    Attributes:
      latency_ms: the latency to reach on `target` (its input size is the model's).
      gflops: a runtime-free budget: GFLOPs of the convolutions at the input size.
      target: where the latency is measured (deploy.latency_table.Target).
      table: the latency table file (default: beside the source model).
      min_keep: the narrowest fraction of any group's width.
      search_images: val images of the layer sensitivity that scores the cuts; 0 scores them
        by the criterion alone (deploy.sensitivity.criterion_rows: no evaluation).
      sensitivity_file: where the measured sensitivity is kept (default: the work directory);
        a search of the same source that asks for the same criterion, keeps, images and input
        size reads it instead of measuring again (one source's searches to several budgets).
    """

    latency_ms: float | None = None
    gflops: float | None = None
    target: Target = Target()
    table: str | None = None
    min_keep: float = 0.25
    search_images: int = 4
    sensitivity_file: str | None = None

    def __post_init__(self):
        if (self.latency_ms is None) == (self.gflops is None):
            raise OptionError("target_latency_ms", "give a latency budget or "
                                                   "--target_gflops, not both")
        for name, value in (("target_latency_ms", self.latency_ms),
                            ("target_gflops", self.gflops)):
            if value is not None and not value > 0:
                raise OptionError(name, f"must be > 0, got {value:g}")
        check_keep(self.min_keep, "min_keep")
        if self.search_images < 0:
            raise OptionError("search_images", f"must be >= 0, got {self.search_images}")

    def job(self) -> dict:
        """What makes a rerun the same search."""
        return {"latency_ms": self.latency_ms, "gflops": self.gflops,
                "target": dataclasses.asdict(self.target) if self.latency_ms else None,
                "min_keep": self.min_keep, "search_images": self.search_images}


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """What to prune to and how.

    Attributes:
      schedule: keep fractions of the source's widths, one stage each (non-increasing).
      overrides: (key, keep) pairs for the last stage (see `deploy.pruning.group_keeps`);
        earlier stages scale them by `schedule[i] / schedule[-1]` (capped at 1).
      plan: target widths instead of fractions: one stage; `schedule` must be (1.0,) and
        `overrides` and `round_to` left at their defaults.
      round_to: round kept widths up to a multiple of this.
      criterion: the importance criterion (deploy.pruning.CRITERIA).
      finetune: training options for fine-tuning after every stage (steps per stage; its
        `model_dir` is replaced by the stage's work directory), or None.
      eval_images: images for the mIoU of the source and of each stage; 0 skips evaluation.
      input_size: (H, W) at which FLOPs are counted (BN-merged model).
      control: also fine-tune the unpruned source for as many steps as the pruned model got
        (every stage's), with the same settings: the equal-budget control, written as the
        model dir `control/` of the output and measured beside the pruned model.
      budget: a latency or FLOP budget instead of keeps: one stage to the plan deploy.budget
        finds; `schedule` must be (1.0,), no overrides or plan.
    """

    schedule: tuple[float, ...] = (0.5,)
    overrides: tuple[tuple[str, float], ...] = ()
    plan: Mapping[str, int] | None = None
    round_to: int = 1
    criterion: str = "l1"
    finetune: TrainOptions | None = None
    eval_images: int = 0
    input_size: tuple[int, int] = (1025, 2049)
    control: bool = False
    budget: Budget | None = None

    def __post_init__(self):
        check_schedule(self.schedule)
        if self.budget is not None and (self.schedule != (1.0,) or self.overrides
                                        or self.plan is not None):
            raise OptionError("target_latency_ms", "a budget chooses the widths: do not "
                                                   "combine it with keeps, overrides or a plan")
        if (self.budget is not None and self.budget.latency_ms is not None
                and tuple(self.budget.target.input_size) != tuple(self.input_size)):
            raise OptionError("input_size", "the latency target's input size must be the "
                                            "model's input size")
        if self.plan is not None and (self.schedule != (1.0,) or self.overrides
                                      or self.round_to != 1):
            raise OptionError("plan", "a plan gives the widths directly: do not combine it "
                                      "with keeps, keep overrides or round_to")
        if self.round_to < 1:
            raise OptionError("round_to", f"must be >= 1, got {self.round_to}")
        if self.eval_images < 0:
            raise OptionError("eval_images", f"must be >= 0, got {self.eval_images}")
        if self.criterion not in CRITERIA:
            raise OptionError("criterion", f"unknown {self.criterion!r}; choose from "
                                           f"{', '.join(CRITERIA)}")
        if self.control and self.finetune is None:
            raise OptionError("control", "the equal-budget control fine-tunes the source as "
                                         "long as the pruned model: it needs fine-tuning steps")


def work_dir_for(target: str) -> str:
    """The resumable work directory of an output directory: `.<name>.work` beside it."""
    parent, name = os.path.split(os.path.realpath(target))
    return os.path.join(parent, f".{name}.work")


def model_dir_problem(path: str) -> str | None:
    """Why `path` is not a model directory that --overwrite may replace, or None."""
    if os.path.isfile(os.path.join(path, PLAN_FILENAME)) and latest_checkpoint(path):
        return None
    return (f"not a model directory (no {PLAN_FILENAME} with a checkpoint); --overwrite "
            f"replaces only model directories")


def prune_model(source: str, output_dir: str, options: PruneOptions,
                train_source: Source | None = None, eval_source: Source | None = None,
                overwrite: bool = False) -> PruneReport:
    """Prunes a trained model and publishes the result as the model directory `output_dir`.

    Args:
      source: a model dir (checkpoint + plan.json), a checkpoint prefix or a reference `.npy`.
      output_dir: the new model dir (must not exist, or be empty, unless `overwrite`).
      options: what to prune to and how.
      train_source: training data (needed with `options.finetune`).
      eval_source: evaluation data (needed with `options.eval_images`).
      overwrite: replace an existing model directory (never the source model).

    Returns:
      The report, also in `output_dir/prune_report.json`.

    Raises:
      OptionError: `output_dir` would replace the source.
      FileExistsError: `output_dir` exists and not `overwrite`.
      ValueError: `output_dir` is not a model directory; a bad plan or data source.
      icnet.interrupts.Interrupted: a signal stopped a fine-tune (its work is kept).
    """
    if holds(output_dir, model_dir_of(source) if not source.endswith(".npy") else source):
        raise OptionError("output_dir", f"{output_dir} would replace the source model "
                                        f"{source}; choose another output directory")
    staging = Staging(output_dir, overwrite, replaceable=model_dir_problem)
    work = work_dir_for(staging.target)
    with staging:
        report = prune_into(source, staging.root, options, train_source, eval_source, work)
        staging.publish()
    shutil.rmtree(work, ignore_errors=True)
    logging.info("wrote %s", staging.target)
    return report


def _targets(config: ICNetConfig, options: PruneOptions) -> list[tuple]:
    """(keep, target plan, overrides) of every stage, resolved up front so that bad keys fail
    before any work."""
    groups = model_groups(config)
    coupled = [group for group in groups if len(group.producers) > 1]
    logging.info("%d prunable channel groups: %d standalone convs and %d coupled groups:\n%s",
                 len(groups), len(groups) - len(coupled), len(coupled),
                 "\n".join(group.describe() for group in coupled))
    if options.plan is not None:
        check_target_plan(config.plan, groups, options.plan)
        return [(None, dict(options.plan), None)]
    targets = []
    last = options.schedule[-1]
    for keep in options.schedule:
        scaled = [(key, min(1.0, check_keep(value, f"keep override {key}") * keep / last))
                  for key, value in options.overrides]
        plan = prune_plan(config.plan, groups, group_keeps(groups, keep, scaled),
                          options.round_to)
        targets.append((keep, plan, dict(scaled) or None))
    for key, _ in options.overrides:
        matched = [g.name for g in groups if any(override_matches(key, p) for p in g.producers)]
        logging.info("keep override %s applies to groups %s", key, ", ".join(matched))
    return targets


def _source_identity(source: str) -> dict:
    """What makes a source the same source on a rerun (its newest checkpoint, or the file)."""
    path = os.path.realpath(source)
    if source.endswith(".npy"):
        stat = os.stat(path)
        return {"path": path, "size": stat.st_size, "mtime": stat.st_mtime}
    prefix = latest_checkpoint(source)
    return {"path": path, "checkpoint": os.path.basename(prefix or ""),
            "mtime": os.stat(f"{prefix}.index").st_mtime if prefix else None}


def _prepare_work(work: str, job: dict) -> None:
    """Keeps the work directory of the same job (to resume it); starts over for another."""
    path = os.path.join(work, JOB_FILENAME)
    if os.path.isdir(work):
        try:
            with open(path) as f:
                same = json.load(f) == job
        except (OSError, ValueError):
            same = False
        if same:
            logging.info("resuming the pruning work in %s", work)
            return
        logging.info("%s holds the work of another pruning job; starting over", work)
        shutil.rmtree(work)
    os.makedirs(work)
    atomic_write_bytes(path, json.dumps(job, indent=1).encode())


def _measure(config: ICNetConfig, weights: WeightDict, options: PruneOptions,
             eval_source: Source | None) -> Measure:
    profile = model_profile(config.replace(batch_norm=False), options.input_size)
    miou = None
    if options.eval_images > 0:
        miou = evaluate(config, weights, eval_source, options.eval_images)["miou"]
    return Measure(params=profile["params"], flops=profile["flops"], gflops=profile["gflops"],
                   miou=miou)


def _describe(measure: Measure, input_size: tuple[int, int]) -> str:
    text = (f"{measure.params / 1e6:.3f}M params, {measure.gflops:.2f} GFLOPs at "
            f"{input_size[0]}x{input_size[1]}")
    if measure.miou is not None:
        text += f", mIoU {100 * measure.miou:.2f}%"
    return text


def _check_sources(config: ICNetConfig, options: PruneOptions, train_source: Source | None,
                   eval_source: Source | None) -> None:
    if (options.finetune is not None or options.criterion == "taylor") and train_source is None:
        raise ValueError("fine-tuning and the taylor criterion need a training data source")
    scored = options.budget is not None and options.budget.search_images > 0
    if (options.eval_images > 0 or scored) and eval_source is None:
        raise ValueError("evaluation and a budget's layer sensitivity need a validation data "
                         "source")
    for what, source in (("training", train_source),
                         ("evaluation", eval_source if options.eval_images else None)):
        if source is not None and source.num_classes != config.num_classes:
            raise ValueError(f"the {what} data has {source.num_classes} classes, the model "
                             f"{config.num_classes}")


def _evidence(config: ICNetConfig, weights: WeightDict, options: PruneOptions,
              train_source: Source | None) -> Evidence:
    """What the criterion needs beyond the weights (Taylor scores on training batches)."""
    seed = options.finetune.seed if options.finetune else 0
    if options.criterion != "taylor":
        return Evidence(seed=seed)
    if train_source is None:
        raise ValueError("the taylor criterion needs a training data source")
    from deploy.taylor import taylor_scores  # TensorFlow gradients, only when asked for

    crop = options.finetune.crop_size if options.finetune else TrainOptions.crop_size
    return Evidence(taylor=taylor_scores(config, weights, train_source, crop, seed=seed),
                    seed=seed)


def _run_stage(number: int, count: int, target: tuple, config: ICNetConfig,
               weights: WeightDict, options: PruneOptions, train_source: Source | None,
               eval_source: Source | None, stage_dir: str
               ) -> tuple[ICNetConfig, WeightDict, PruneStage]:
    """Prunes to one stage's plan and fine-tunes it in `stage_dir` (resuming there)."""
    keep, plan, overrides = target
    begin = time.time()
    logging.info("stage %d/%d: keep %s%s (criterion %s)", number, count,
                 keep if keep is not None else "plan",
                 f" with overrides {overrides}" if overrides else "", options.criterion)
    config, weights = prune(config, weights, plan, options.criterion,
                            _evidence(config, weights, options, train_source))
    stage = PruneStage(stage=number, keep=keep, overrides=overrides, plan=dict(config.plan),
                       measure=Measure(0, 0, 0.0))
    if options.finetune is not None:
        before_path = os.path.join(stage_dir, "before_finetune.json")
        if options.eval_images > 0:
            if os.path.isfile(before_path):
                with open(before_path) as f:
                    stage.miou_before_finetune = json.load(f)["miou"]
            else:
                stage.miou_before_finetune = evaluate(config, weights, eval_source,
                                                      options.eval_images)["miou"]
                atomic_write_bytes(before_path, json.dumps(
                    {"miou": stage.miou_before_finetune}).encode())
        finetune = dataclasses.replace(options.finetune, model_dir=stage_dir)
        logging.info("stage %d/%d: fine-tuning %d steps in %s", number, count, finetune.steps,
                     stage_dir)
        train(finetune, config, train_source, init_weights=(weights, f"stage {number} pruned "
                                                                     f"weights"))
        config, weights = load_checkpoint_weights(stage_dir)
        summary = read_summary(stage_dir)
        stage.finetune = FinetuneReport(steps=summary.get("step", finetune.steps),
                                        losses=summary.get("losses", {}),
                                        seconds=summary.get("seconds", 0.0))
    stage.measure = _measure(config, weights, options, eval_source)
    stage.seconds = round(time.time() - begin, 1)
    return config, weights, stage


def _control(source: str, directory: str, options: PruneOptions, train_source: Source,
             eval_source: Source | None, control_dir: str, stages: int) -> ControlReport:
    """Fine-tunes the unpruned source for every stage's steps in `control_dir` (resuming
    there), measures it, and saves it as `directory/control/`."""
    result_path = os.path.join(control_dir, RESULT_FILENAME)
    steps = options.finetune.steps * stages
    if os.path.isfile(result_path):
        with open(result_path) as f:
            control = from_dict(ControlReport, json.load(f))
        logging.info("equal-budget control: done in an earlier run")
    else:
        config, weights = load_weights(source)
        logging.info("equal-budget control: fine-tuning the unpruned source %d steps in %s",
                     steps, control_dir)
        train(dataclasses.replace(options.finetune, model_dir=control_dir, steps=steps),
              config, train_source, init_weights=(weights, f"the source {source}"))
        config, weights = load_checkpoint_weights(control_dir)
        miou = (evaluate(config, weights, eval_source, options.eval_images)["miou"]
                if options.eval_images > 0 else None)
        control = ControlReport(steps=steps, miou=miou,
                                seconds=read_summary(control_dir).get("seconds", 0.0))
        atomic_write_bytes(result_path, json.dumps(to_dict(control)).encode())
    config, weights = load_checkpoint_weights(control_dir)
    save_checkpoint(config, weights, os.path.join(directory, control.directory))
    logging.info("equal-budget control: %s", "mIoU n/a" if control.miou is None
                 else f"mIoU {100 * control.miou:.2f}%")
    return control




def latency_table(source: str, config: ICNetConfig, options: PruneOptions) -> LatencyTable:
    """The budget's latency table (target and staleness checked), measured where missing."""
    budget = options.budget
    table = LatencyTable(budget.table or default_table_path(source, budget.target),
                         budget.target, config, budget.min_keep, options.round_to)
    table.measure_missing()
    return table


def _cost(source: str, config: ICNetConfig, weights: WeightDict, options: PruneOptions):
    """(cost function of a plan, the budget in its unit, the table or None, the source's
    measured ms or None); raises OptionError for an unreachable budget."""
    budget = options.budget
    narrowest = budget_search.narrowest_plan(config.plan, model_groups(config),
                                             budget.min_keep, options.round_to)
    if budget.latency_ms is None:
        flops = PlanCost(config, options.input_size)

        def cost(plan):
            return flops.flops(plan) / 1e9

        target, table, source_ms, unit, flag = budget.gflops, None, None, "GFLOPs", \
            "target_gflops"
    else:
        table = latency_table(source, config, options)
        source_ms = 1e3 * table.model_seconds(config, weights)
        table.calibrate(config.plan, source_ms / 1e3)

        def cost(plan):
            return 1e3 * table.estimate(plan)

        target, unit, flag = budget.latency_ms, "ms", "target_latency_ms"
        logging.info("budget: the source runs in %.1f ms on %s", source_ms,
                     budget.target.describe())
    if table is None:
        if cost(narrowest) <= target:
            return cost, target, table, source_ms
        estimate = f"is estimated at {cost(narrowest):.4g} {unit}"
    else:  # the estimate is checked, not assumed: the narrowest plan measured anchors it too
        narrow = config.replace(plan=narrowest)
        narrowest_ms = 1e3 * table.model_seconds(narrow, initial_weights(narrow))
        estimated_ms = cost(narrowest)
        logging.info("budget: the narrowest allowed plan, estimated at %.1f ms, runs in %.1f ms",
                     estimated_ms, narrowest_ms)
        table.calibrate(narrowest, narrowest_ms / 1e3)
        if narrowest_ms <= target:
            return cost, target, table, source_ms
        estimate = f"runs in {narrowest_ms:.4g} ms (estimated {estimated_ms:.4g})"
    raise OptionError(flag, f"{target:g} {unit} is unreachable: the narrowest allowed plan "
                            f"(every group at --min_keep {budget.min_keep:g}) {estimate}")


def _sensitivity(config: ICNetConfig, weights: WeightDict, options: PruneOptions,
                 evidence: Evidence, eval_source: Source, work: str) -> list[Row]:
    """The source's layer sensitivity at the table's grid keeps (kept in the budget's
    sensitivity_file, default `work`, with what it was measured for)."""
    budget = options.budget
    keeps = sorted({k for k in (0.75, 0.5, 0.25, budget.min_keep)
                    if budget.min_keep <= k < 1.0}, reverse=True)
    if budget.search_images == 0:
        return criterion_rows(config, weights, keeps, options.criterion, evidence)
    path = budget.sensitivity_file or os.path.join(work, "sensitivity.json")
    key = {"criterion": options.criterion, "keeps": keeps, "images": budget.search_images,
           "input_size": list(options.input_size)}
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("key") == key:
            logging.info("budget: the layer sensitivity measured before (%s)", path)
            return [Row(**row) for row in saved["rows"]]
    logging.info("budget: layer sensitivity of %d groups at keeps %s on %d images",
                 len(model_groups(config)), keeps, budget.search_images)
    _, rows = measure_sensitivity(config, weights, eval_source, budget.search_images,
                                  keeps, options.input_size, options.criterion, evidence)
    atomic_write_bytes(path, json.dumps({"key": key, "rows": [dataclasses.asdict(r)
                                                              for r in rows]}).encode())
    return rows


def _budget_plan(source: str, config: ICNetConfig, weights: WeightDict, options: PruneOptions,
                 train_source: Source | None, eval_source: Source, cost_model, work: str
                 ) -> tuple[BudgetReport, dict[str, int]]:
    """(the report, the plan) of the budget search (resuming from `work`), measuring each
    round's plan on the latency target."""
    path = os.path.join(work, "budget.json")
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        return from_dict(BudgetReport, saved), saved["plan"]
    budget = options.budget
    cost, target, table, source_ms = cost_model
    evidence = _evidence(config, weights, options, train_source)
    rows = _sensitivity(config, weights, options, evidence, eval_source, work)
    groups = model_groups(config)
    if table is None:
        plan, taken = budget_search.search(config.plan, groups, rows, cost, target,
                                           budget.min_keep, options.round_to)
        rounds, measured_ms = [], None
    else:
        def measure(plan):
            pruned_config, pruned_weights = prune(config, weights, plan, options.criterion,
                                                  evidence)
            measured = 1e3 * measure_model(pruned_config, pruned_weights, budget.target)
            logging.info("budget: estimated %.1f ms, measured %.1f ms (target %g ms)",
                         cost(plan), measured, target)
            return measured

        def anchor(plan, measured):
            table.calibrate(plan, measured / 1e3)

        fitted = budget_search.fit(config.plan, groups, rows, cost, anchor, measure, target,
                                   budget.min_keep, options.round_to)
        plan, taken, rounds, measured_ms = (fitted.plan, fitted.steps, fitted.rounds,
                                            fitted.measured)
    steps = [dataclasses.asdict(step) for step in taken]
    target_fields = ({"runtime": budget.target.runtime, "quantization":
                      budget.target.quantization, "threads": budget.target.threads,
                      "table": table.path} if table else {})
    report = BudgetReport(latency_ms=budget.latency_ms, gflops=budget.gflops,
                          min_keep=budget.min_keep, search_images=budget.search_images,
                          estimate=cost(plan), source_ms=source_ms, measured_ms=measured_ms,
                          rounds=rounds, steps=steps, **target_fields)
    atomic_write_bytes(path, json.dumps({**to_dict(report), "plan": plan}).encode())
    return report, plan


def prune_into(source: str, directory: str, options: PruneOptions,
               train_source: Source | None, eval_source: Source | None,
               work: str) -> PruneReport:
    """Prunes `source` in stages into `directory` (created), resuming fine-tunes in `work`.

    Returns:
      The report, also written to `directory/prune_report.json`.

    Raises:
      ValueError, FileNotFoundError: a bad source, plan, keep, override or data source.
      icnet.interrupts.Interrupted: a signal stopped a fine-tune (`work` keeps it).
    """
    config, weights = load_weights(source)
    _check_sources(config, options, train_source, eval_source)
    targets = _targets(config, options) if options.budget is None else None
    # A budget's checks (target runtime, table, reachability) come before any work.
    cost_model = _cost(source, config, weights, options) if options.budget else None
    job = {"source": _source_identity(source),
           "plans": [t[1] for t in targets] if targets else None,
           "budget": options.budget.job() if options.budget else None,
           "criterion": options.criterion, "eval_images": options.eval_images,
           "control": options.control,
           "input_size": list(options.input_size),
           "finetune": ({k: v for k, v in options.finetune.to_dict().items()
                         if k != "model_dir"} if options.finetune else None)}
    _prepare_work(work, json.loads(json.dumps(job)))
    budget = None
    if options.budget is not None:
        budget, plan = _budget_plan(source, config, weights, options, train_source,
                                    eval_source, cost_model, work)
        targets = [(None, plan, None)]
    original_path = os.path.join(work, "source.json")
    if os.path.isfile(original_path):
        with open(original_path) as f:
            original = from_dict(Measure, json.load(f))
    else:
        original = _measure(config, weights, options, eval_source)
        atomic_write_bytes(original_path, json.dumps(to_dict(original)).encode())
    logging.info("source %s: %s", source, _describe(original, options.input_size))
    stages = []
    for number, target in enumerate(targets, 1):
        stage_dir = os.path.join(work, f"stage_{number}")
        result_path = os.path.join(stage_dir, RESULT_FILENAME)
        if os.path.isfile(result_path):
            with open(result_path) as f:
                stage = from_dict(PruneStage, json.load(f))
            if options.finetune is not None:
                config, weights = load_checkpoint_weights(stage_dir)
            else:
                config, weights = prune(config, weights, stage.plan, options.criterion,
                                        _evidence(config, weights, options, train_source))
            logging.info("stage %d/%d: done in an earlier run", number, len(targets))
        else:
            config, weights, stage = _run_stage(number, len(targets), target, config, weights,
                                                options, train_source, eval_source, stage_dir)
            atomic_write_bytes(result_path, json.dumps(to_dict(stage)).encode())
        logging.info("stage %d/%d done: %s (x%.2f FLOPs of the source)", number, len(targets),
                     _describe(stage.measure, options.input_size),
                     stage.measure.flops / original.flops)
        stages.append(stage)
        summaries = os.path.join(stage_dir, "train")
        if os.path.isdir(summaries):
            shutil.copytree(summaries, os.path.join(directory, "finetune", f"stage_{number}"),
                            dirs_exist_ok=True)
    os.makedirs(directory, exist_ok=True)
    control = (_control(source, directory, options, train_source, eval_source,
                        os.path.join(work, "control"), len(targets)) if options.control else None)
    report = PruneReport(
        source=source, input_size=list(options.input_size), num_classes=config.num_classes,
        eval_images=options.eval_images,
        finetune_steps=options.finetune.steps if options.finetune else 0,
        round_to=options.round_to, original=original, stages=stages,
        checkpoint=os.path.basename(save_checkpoint(config, weights, directory)),
        criterion=options.criterion, control=control, budget=budget)
    if budget is not None and budget.latency_ms is not None:
        budget.final_ms = 1e3 * measure_model(config, weights, options.budget.target)
        logging.info("budget: the pruned model runs in %.1f ms on %s (target %g ms)",
                     budget.final_ms, options.budget.target.describe(), budget.latency_ms)
    atomic_write_bytes(os.path.join(directory, PRUNE_REPORT_FILENAME),
                       report.to_json().encode())
    return report
