"""The one training loop (`run_loop`) and the ICNet training run built on it (`train`).

`run_loop` is what every kind of training in the kit shares: it runs a step function to a
step count with poly learning-rate decay, stops on a NaN or infinite loss (`TrainingDiverged`,
keeping the last good checkpoint), logs progress lines and TensorBoard scalars, saves
checkpoints, and turns SIGINT/SIGTERM into a checkpoint at the current step followed by
`icnet.interrupts.Interrupted`. `train` (the ICNet cascade loss; train.train, pruning
fine-tunes) and `deploy.quantize.finetune` (QAT) are step functions around it.

`train(options, config, source)` builds the BN variant of `config` at the crop size, resumes
from the newest intact checkpoint in `options.model_dir` (a damaged newest one is moved into
`damaged_checkpoints/` with a one-line warning), else loads `init_weights`, and trains to
`options.steps`. It records its options and the data it trained on in `train_summary.json`,
from which deploy.prune and deploy.export read the fine-tuning settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from icnet import cpu
from icnet.checkpoint import checkpoint_for
from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.data import Source, train_dataset
from icnet.data.labels import palette_for
from icnet.exits import Failed
from icnet.fileio import atomic_write_bytes, remove_stale_temp_files
from icnet.image_io import overlay
from icnet.interrupts import Interrupted, deferred
from icnet.losses import DEFAULT_LAMBDAS, cascade_loss, weight_decay
from icnet.model import build_icnet
from icnet.weights import WeightDict, assign_weights, expand_batch_norm

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("sgd", "adam")
SUMMARY_FILENAME = "train_summary.json"
DAMAGED_DIRNAME = "damaged_checkpoints"


class TrainingDiverged(Failed):
    """The loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters and bookkeeping of one training run.

    The defaults are the kit's measured from-scratch recipe on the synthetic scenes (Adam at
    2e-3, poly decay, batch 8, 256x512 crops, mirroring); the reference's fine-tuning recipe is
    momentum SGD at 5e-4 (`optimizer="sgd"`).
    """

    model_dir: str
    steps: int
    batch_size: int = 8
    crop_size: tuple[int, int] = (256, 512)
    learning_rate: float = 2e-3
    poly_power: float = 0.9
    momentum: float = 0.9
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    lambdas: tuple[float, float, float] = (0.16, 0.4, 1.0)
    update_mean_var: bool = True
    # Precise BN: at the last step the moving statistics are re-estimated over this many
    # batches at the final weights (0: keep the moving averages).
    precise_bn_batches: int = 20
    train_beta_gamma: bool = True
    random_scale: bool = False
    random_mirror: bool = True
    strategy: str = "default"
    mixed_precision: bool | None = None
    seed: int = 0
    cache_examples: bool = False
    checkpoint_every: int = 100
    log_every: int = 10
    image_summary_every: int = 100
    max_checkpoints: int = 3
    stop_at: int | None = None  # stop there (checkpointed) with the schedule of `steps`

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.precise_bn_batches < 0:
            raise ValueError(f"precise_bn_batches must be >= 0, got {self.precise_bn_batches}")
        for name in ("checkpoint_every", "log_every", "image_summary_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise ValueError(f"stop_at must be in [1, steps], got {self.stop_at}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping, **changes) -> "TrainOptions":
        """Options from `to_dict` output (unknown keys and a run's `stop_at` ignored), with
        `changes` applied."""
        names = {f.name for f in dataclasses.fields(cls)} - {"stop_at"}
        kept = {k: v for k, v in values.items() if k in names}
        for key in ("crop_size", "lambdas"):
            if key in kept:
                kept[key] = tuple(kept[key])
        return cls(**{**kept, **changes})


def read_summary(model_dir: str) -> dict:
    """A model dir's train_summary.json ({} when there is none or it is unreadable)."""
    try:
        with open(os.path.join(model_dir, SUMMARY_FILENAME)) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def use_mixed_precision(asked: bool | None, gpu: bool) -> bool:
    """Whether to train in mixed precision: as asked, or by default (None) bfloat16 on a CPU
    with native bf16 arithmetic (AMX-BF16, AVX512-BF16) and no GPU: 1.5x the images per second
    of float32 on an AVX512-BF16 CPU with the same loss curve and mIoU (README). A GPU's
    float16 stays opt-in."""
    if asked is not None:
        return asked
    return not gpu and cpu.has_bf16()


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local devices; several logical CPUs count),
    or `multi_worker` (workers from TF_CONFIG)."""
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multi_worker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def make_optimizer(name: str, learning_rate: float, steps: int, poly_power: float = 0.9,
                   momentum: float = 0.9):
    """(optimizer, schedule): Adam or momentum SGD with poly decay to 0 over `steps`.

    The fused (`legacy`) Keras optimizers: the same update rules as the new ones, one op per
    variable, so a train step traces in half the time (12 s of a tiny model's 22 s per run).
    """
    schedule = tf_keras.optimizers.schedules.PolynomialDecay(
        learning_rate, steps, end_learning_rate=0.0, power=poly_power)
    if name == "adam":
        return tf_keras.optimizers.legacy.Adam(schedule), schedule
    return tf_keras.optimizers.legacy.SGD(schedule, momentum=momentum), schedule


def _format_eta(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _plain_losses(losses: Mapping[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in losses.items())


def run_loop(step: Callable[[object], Mapping[str, tf.Tensor]], batches: Iterator,
             optimizer, schedule: Callable, *, steps: int, images_per_step: int,
             log_every: int = 10, name: str = "step",
             describe: Callable[[Mapping[str, float]], str] = _plain_losses,
             manager: tf.train.CheckpointManager | None = None, checkpoint_every: int = 0,
             after_step: Callable[[int, object], None] | None = None,
             before_last_save: Callable[[], None] | None = None) -> dict:
    """Runs `step(batch)` until the optimizer has made `steps` steps.

    Every `log_every` steps (and at the last) it logs `"<name> S/STEPS  <losses>  lr ...
    img/s  ETA ..."` and writes the losses, learning rate and speed as TensorBoard scalars
    to the default summary writer, if one is set.

    Args:
      step: one optimizer step on a batch; returns named scalar losses.
      batches: an iterator of batches.
      optimizer: its `iterations` count the steps (a resumed optimizer starts there).
      schedule: the learning-rate schedule (for the progress lines).
      steps: the step to stop at.
      images_per_step: images in one batch (for the speed).
      log_every: steps between progress lines.
      name: the progress lines' prefix.
      describe: formats the losses for the progress line.
      manager: saves a checkpoint every `checkpoint_every` steps, at the last step and when a
        signal stops the loop; None saves nothing.
      checkpoint_every: steps between checkpoints.
      after_step: called with (step, batch) after every step (e.g. image summaries).
      before_last_save: called after the last step, before its checkpoint (e.g. precise BN).

    Returns:
      {"step", "losses" (the last, as floats), "seconds", "curve" ([step, losses, images per
      second] at every progress line)}.

    Raises:
      TrainingDiverged: a loss became NaN or infinite (no checkpoint is saved for it).
      icnet.interrupts.Interrupted: SIGINT/SIGTERM (after saving a checkpoint).
    """
    begin = window_start = time.time()
    window_images = 0
    current = int(optimizer.iterations.numpy())
    losses: dict[str, float] = {}
    curve = []
    with deferred() as stop:
        while current < steps:
            batch = next(batches)
            losses = {key: float(value) for key, value in step(batch).items()}
            current = int(optimizer.iterations.numpy())
            window_images += images_per_step
            bad = {key: value for key, value in losses.items() if not np.isfinite(value)}
            if bad:
                kept = manager.latest_checkpoint if manager else None
                raise TrainingDiverged(
                    f"loss became {next(iter(bad.values()))} at step {current}; "
                    f"stopped without saving. "
                    + (f"The last good checkpoint is {kept or 'none'}; lower the learning "
                       f"rate and rerun to resume from it" if manager else
                       "Lower the learning rate"))
            if current % log_every == 0 or current == steps:
                speed = window_images / max(time.time() - window_start, 1e-9)
                eta = (steps - current) * images_per_step / max(speed, 1e-9)
                rate = float(schedule(current))
                logging.info("%s %d/%d  %s  lr %.2e  %.1f img/s  ETA %s", name, current, steps,
                             describe(losses), rate, speed, _format_eta(eta))
                for key, value in losses.items():
                    tf.summary.scalar(f"loss/{key}", value, step=current)
                tf.summary.scalar("learning_rate", rate, step=current)
                tf.summary.scalar("images_per_second", speed, step=current)
                curve.append([current, losses, round(speed, 3)])
                window_start, window_images = time.time(), 0
            if after_step is not None:
                after_step(current, batch)
            if current == steps and before_last_save is not None:
                before_last_save()
            if manager is not None and (current % checkpoint_every == 0 or current == steps):
                save_checkpoint(manager, current)
            if stop.received is not None:
                signum = stop.consume()
                detail = f"stopped at step {current}"
                if manager is not None:
                    save_checkpoint(manager, current)
                    detail = (f"checkpoint of step {current} saved in {manager.directory}; "
                              f"rerun the same command to resume")
                raise Interrupted(signum, detail)
    return {"step": current, "losses": losses, "seconds": round(time.time() - begin, 1),
            "curve": curve}


# --------------------------------------------------------------------------------------------
# Checkpoints: leftovers, verification, fallback to the newest intact one.

_TEMP_CHECKPOINT = re.compile(r"ckpt-\d+_temp")


def remove_checkpoint_leftovers(model_dir: str) -> None:
    """Removes the `ckpt-N_temp/` directories and temp files a process killed while saving
    left behind."""
    if not os.path.isdir(model_dir):
        return
    remove_stale_temp_files(model_dir)
    for name in os.listdir(model_dir):
        path = os.path.join(model_dir, name)
        if _TEMP_CHECKPOINT.fullmatch(name) and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            logging.info("removed %s, left by a run killed while saving a checkpoint", path)


def save_checkpoint(manager: tf.train.CheckpointManager, step: int) -> None:
    """Saves checkpoint `step`; a failed save (a full disk) leaves no partial one behind."""
    try:
        manager.save(checkpoint_number=step)
    except BaseException:
        remove_checkpoint_leftovers(manager.directory)
        raise


def checkpoint_problem(prefix: str) -> str | None:
    """Why the checkpoint at `prefix` cannot be read (every tensor is read), or None."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None


def _move_aside(prefix: str) -> str:
    """Moves a checkpoint's files into `damaged_checkpoints/` beside it; returns the folder."""
    directory = os.path.dirname(prefix)
    aside = os.path.join(directory, DAMAGED_DIRNAME)
    os.makedirs(aside, exist_ok=True)
    stem = os.path.basename(prefix)
    for name in os.listdir(directory):
        if name == f"{stem}.index" or name.startswith(f"{stem}.data-"):
            os.replace(os.path.join(directory, name), os.path.join(aside, name))
    return aside


def newest_intact_checkpoint(model_dir: str) -> str | None:
    """The newest checkpoint of a model dir that reads completely, or None.

    Damaged newer ones are moved into `damaged_checkpoints/` (one warning line each, naming
    the checkpoint and the reason), and the checkpoint state file is rewritten to list only
    the intact ones.
    """
    state = tf.train.get_checkpoint_state(model_dir)
    if state is None:
        return None
    # TensorFlow has joined relative entries to `model_dir` already.
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    intact = [p for p in paths if tf.io.gfile.exists(f"{p}.index")]
    moved = False
    while intact:
        problem = checkpoint_problem(intact[-1])
        if problem is None:
            break
        aside = _move_aside(intact[-1])
        logging.warning("checkpoint %s is damaged (%s); moved it into %s and resuming from "
                        "the previous one", intact[-1], problem, aside)
        intact.pop()
        moved = True
    if moved or len(intact) != len(paths):
        tf.compat.v1.train.update_checkpoint_state(
            model_dir, intact[-1] if intact else "", all_model_checkpoint_paths=intact)
    return intact[-1] if intact else None


# --------------------------------------------------------------------------------------------
# ICNet training.


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this is a multi-worker task other than the chief (or worker 0 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def _checkpoint_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Workers other than the chief write their (identical) checkpoints to a scratch dir."""
    if _is_chief(strategy):
        return model_dir
    return os.path.join(model_dir, f".worker_{strategy.cluster_resolver.task_id}")


def _check_model_dir(model_dir: str, config: ICNetConfig) -> None:
    """Refuses a model dir whose plan.json describes another model."""
    plan_path = os.path.join(model_dir, PLAN_FILENAME)
    if os.path.isfile(plan_path) and ICNetConfig.load(plan_path) != config:
        raise ValueError(f"{model_dir} holds a model with another plan ({plan_path}); "
                         f"use a new --model_dir or the same widths and class count")


def _trainable_variables(model: tf_keras.Model, train_beta_gamma: bool) -> list[tf.Variable]:
    if train_beta_gamma:
        return model.trainable_variables
    frozen = {id(v) for layer in model.layers
              if isinstance(layer, tf_keras.layers.BatchNormalization)
              for v in layer.trainable_variables}
    return [v for v in model.trainable_variables if id(v) not in frozen]


def load_initial_weights(model: tf_keras.Model, config: ICNetConfig, weights: WeightDict,
                         source: str) -> None:
    """Loads reference or checkpoint weights; merged (no-BN) files get identity BN layers.

    Classifiers of another class count (or absent heads) keep their fresh initialisation.
    """
    if config.batch_norm and not any(name.endswith("_bn") for name in weights):
        weights = expand_batch_norm(weights)
    try:
        assign_weights(model, weights, allow_missing_classifier=True)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    logging.info("initialised from %s", source)


def _cascade_step(model: tf_keras.Model, optimizer, options: TrainOptions, config: ICNetConfig,
                  strategy: tf.distribute.Strategy) -> Callable:
    """One distributed optimizer step of the cascade label guidance loss plus weight decay."""
    lambdas = dict(zip(DEFAULT_LAMBDAS, options.lambdas))
    replicas = strategy.num_replicas_in_sync
    variables = _trainable_variables(model, options.train_beta_gamma)
    scaled_loss = isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            outputs = model(images, training=options.update_mean_var)
            loss, branches = cascade_loss(outputs, labels, config.num_classes, lambdas)
            total = loss + weight_decay(model, options.weight_decay)
            scaled = total / replicas
            if scaled_loss:
                scaled = optimizer.get_scaled_loss(scaled)
        gradients = tape.gradient(scaled, variables)
        if scaled_loss:
            gradients = optimizer.get_unscaled_gradients(gradients)
        optimizer.apply_gradients(zip(gradients, variables))
        return {"total": total, "loss": loss, **branches}

    @tf.function
    def train_step(batch):
        per_replica = strategy.run(replica_step, args=batch)
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()}

    return train_step


def _cascade_losses(losses: Mapping[str, float]) -> str:
    return (f"loss {losses['loss']:.4f} (sub4 {losses['sub4_out']:.3f} sub24 "
            f"{losses['sub24_out']:.3f} sub124 {losses['conv6_cls']:.3f})  total "
            f"{losses['total']:.4f}")


def _write_summary(model_dir: str, summary: dict) -> None:
    atomic_write_bytes(os.path.join(model_dir, SUMMARY_FILENAME),
                       json.dumps(summary, indent=1).encode())


def train(options: TrainOptions, config: ICNetConfig, source: Source,
          init_weights: tuple[WeightDict, str] | None = None,
          strategy: tf.distribute.Strategy | None = None,
          data: Mapping | None = None) -> dict:
    """Trains `config` on `source`; resumes from `options.model_dir` when it has a checkpoint.

    Args:
      options: hyper-parameters and bookkeeping.
      config: the model (its BN variant is trained).
      source: the training split.
      init_weights: (weights, description) used when there is no checkpoint to resume.
      strategy: a tf.distribute strategy; made from `options.strategy` when None.
      data: how the data was chosen (e.g. the binary's dataset flags), recorded in
        train_summary.json for the tools that fine-tune this model later.

    Returns:
      A summary dict: final step, last losses, wall time, whether it resumed.

    Raises:
      TrainingDiverged: the loss became NaN (the last good checkpoint is kept).
      icnet.interrupts.Interrupted: a stop signal arrived (a checkpoint was saved first).
    """
    gpu = bool(tf.config.list_physical_devices("GPU"))
    options = dataclasses.replace(options, mixed_precision=use_mixed_precision(
        options.mixed_precision, gpu))
    previous = tf_keras.mixed_precision.global_policy()
    if options.mixed_precision:
        tf_keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")
        logging.info("mixed precision: %s", "float16 on the GPU" if gpu else
                     "bfloat16 on the CPU")
    try:
        return _train(options, config, source, init_weights, strategy, data, gpu)
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def _train(options: TrainOptions, config: ICNetConfig, source: Source,
           init_weights: tuple[WeightDict, str] | None, strategy: tf.distribute.Strategy | None,
           data: Mapping | None, gpu: bool) -> dict:
    config = config.replace(batch_norm=True)
    strategy = strategy or make_strategy(options.strategy)
    chief = _is_chief(strategy)
    _check_model_dir(options.model_dir, config)
    replicas = strategy.num_replicas_in_sync
    if options.batch_size % replicas:
        raise ValueError(f"batch_size {options.batch_size} is not divisible by the "
                         f"{replicas} replicas of --strategy {options.strategy}")

    with strategy.scope():
        model = build_icnet(config, options.crop_size)
        optimizer, schedule = make_optimizer(options.optimizer, options.learning_rate,
                                             options.steps, options.poly_power,
                                             options.momentum)
        if options.mixed_precision and gpu:
            optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
        checkpoint = checkpoint_for(model, optimizer=optimizer)
    write_dir = _checkpoint_dir(options.model_dir, strategy)
    remove_checkpoint_leftovers(write_dir)
    resumed_from = newest_intact_checkpoint(options.model_dir)
    if resumed_from:
        # Optimizer slots are restored when first created; expect_partial silences the
        # warnings a run that stops before any step would print about them.
        checkpoint.restore(resumed_from).assert_existing_objects_matched().expect_partial()
        logging.info("resumed from %s (step %d)", resumed_from, int(optimizer.iterations.numpy()))
    elif init_weights is not None:
        load_initial_weights(model, config, *init_weights)
    manager = tf.train.CheckpointManager(checkpoint, write_dir, options.max_checkpoints)
    # Written once the model builds and its initial weights load, so that a first run refused
    # for its widths, crop or weights leaves no plan.json pinning the next attempt to them.
    plan_path = os.path.join(options.model_dir, PLAN_FILENAME)
    if chief and not os.path.isfile(plan_path):
        os.makedirs(options.model_dir, exist_ok=True)
        config.save(plan_path)
    start = int(optimizer.iterations.numpy())
    stop = options.stop_at or options.steps
    record = {"options": options.to_dict(), "data": dict(data or {})}
    if start >= stop:
        logging.info("already trained to step %d of %d; nothing to do", start, stop)
        return {"step": start, "resumed": bool(resumed_from), "losses": {}, "seconds": 0.0}
    curve = [point for point in read_summary(options.model_dir).get("curve", [])
             if point[0] <= start] if resumed_from else []
    if chief:
        _write_summary(options.model_dir, {**record, "step": start, "finished": False,
                                           "curve": curve})

    # A resumed run draws fresh batches (seeded by the step) rather than replaying old ones.
    batches = train_dataset(source, options.crop_size, options.batch_size,
                            options.random_scale, options.random_mirror,
                            seed=options.seed + start, cache=options.cache_examples)
    data_options = tf.data.Options()
    data_options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    iterator = iter(strategy.experimental_distribute_dataset(batches.with_options(data_options)))
    summary_dir = os.path.join(options.model_dir, "train" if chief else ".worker_summaries")
    palette = palette_for(config.num_classes)

    def image_summary(step: int, batch) -> None:
        if step % options.image_summary_every == 0:
            _image_summary(model, batch, palette, step, strategy)

    def precise_bn() -> None:
        if options.update_mean_var and options.precise_bn_batches:
            precise_batch_norm(model, iterator, options.precise_bn_batches, strategy)

    with tf.summary.create_file_writer(summary_dir).as_default():
        result = run_loop(_cascade_step(model, optimizer, options, config, strategy), iterator,
                          optimizer, schedule, steps=stop,
                          images_per_step=options.batch_size, log_every=options.log_every,
                          describe=_cascade_losses, manager=manager,
                          checkpoint_every=options.checkpoint_every, after_step=image_summary,
                          before_last_save=precise_bn)
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    summary = {"step": result["step"], "resumed": bool(resumed_from),
               "losses": result["losses"], "replicas": replicas, "seconds": result["seconds"]}
    if chief:
        _write_summary(options.model_dir, {**record, **summary,
                                           "finished": stop == options.steps,
                                           "curve": curve + result["curve"]})
    return summary


def precise_batch_norm(model: tf_keras.Model, batches: Iterator, num_batches: int,
                       strategy: tf.distribute.Strategy | None = None) -> None:
    """Precise BN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): sets every BN
    layer's moving mean and variance to the plain average of its batch statistics over
    `num_batches` training batches at the current weights. The exponential moving averages of
    a short run lag behind weights that moved while they were taken (measured here: an fs=2
    model after 150 Adam steps scored 7.0% val mIoU with its moving averages, 20.8% with
    these)."""
    strategy = strategy or tf.distribute.get_strategy()
    layers = [layer for layer in model.layers
              if isinstance(layer, tf_keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    begin = time.time()
    try:
        for k in range(num_batches):
            # Momentum k/(k+1) makes the moving value the running mean of the k+1 batches.
            for layer in layers:
                layer.momentum = k / (k + 1)
            images = next(batches)[0]
            strategy.run(lambda x: model(x, training=True), args=(images,))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    logging.info("precise BN: the moving statistics of %d BN layers re-estimated over %d "
                 "batches (%.1f s)", len(layers), num_batches, time.time() - begin)


def _image_summary(model, batch, palette, step, strategy) -> None:
    """The first crop of the batch beside its predicted class overlay."""
    images = strategy.experimental_local_results(batch[0])[0][:1]
    logits = model(images, training=False)["conv6_cls"]
    classes = tf.image.resize(tf.argmax(logits, -1)[..., None], images.shape[1:3],
                              method="nearest")[0, ..., 0].numpy()
    image = images[0].numpy().astype(np.uint8)
    blended = overlay(image, classes, palette)
    tf.summary.image("prediction", np.concatenate([image, blended], axis=1)[None], step=step)
