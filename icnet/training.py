"""The training loop: cascade loss, poly LR momentum SGD, tf.distribute, resumable checkpoints.

`train(options, config, source)` builds the BN variant of `config` at the crop size, restores
the newest checkpoint in `options.model_dir` if there is one (else loads `init_weights`), and
trains to `options.steps`, writing checkpoints, TensorBoard summaries and progress lines.
SIGINT/SIGTERM save a checkpoint before exiting; a NaN loss stops training, keeping the last
good checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from icnet.checkpoint import checkpoint_for
from icnet.config import PLAN_FILENAME, ICNetConfig
from icnet.data import Source, train_dataset
from icnet.data.labels import palette_for
from icnet.fileio import atomic_write_bytes
from icnet.image_io import overlay
from icnet.losses import DEFAULT_LAMBDAS, cascade_loss, weight_decay
from icnet.model import build_icnet
from icnet.weights import WeightDict, assign_weights, expand_batch_norm

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("sgd", "adam")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; a checkpoint was saved first."""


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters and bookkeeping of one training run (REFERENCE.md §3 defaults)."""

    model_dir: str
    steps: int
    batch_size: int = 8
    crop_size: tuple[int, int] = (720, 720)
    learning_rate: float = 5e-4
    poly_power: float = 0.9
    momentum: float = 0.9
    optimizer: str = "sgd"
    weight_decay: float = 1e-4
    lambdas: tuple[float, float, float] = (0.16, 0.4, 1.0)
    update_mean_var: bool = True
    train_beta_gamma: bool = True
    random_scale: bool = True
    random_mirror: bool = True
    strategy: str = "default"
    mixed_precision: bool = False
    seed: int = 0
    cache_examples: bool = False
    checkpoint_every: int = 100
    log_every: int = 10
    image_summary_every: int = 100
    max_checkpoints: int = 3

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("checkpoint_every", "log_every", "image_summary_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


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


class _StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _format_eta(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def train(options: TrainOptions, config: ICNetConfig, source: Source,
          init_weights: tuple[WeightDict, str] | None = None,
          strategy: tf.distribute.Strategy | None = None) -> dict:
    """Trains `config` on `source`; resumes from `options.model_dir` when it has a checkpoint.

    Args:
      options: hyper-parameters and bookkeeping.
      config: the model (its BN variant is trained).
      source: the training split.
      init_weights: (weights, description) used when there is no checkpoint to resume.
      strategy: a tf.distribute strategy; made from `options.strategy` when None.

    Returns:
      A summary dict: final step, last losses, wall time, whether it resumed.

    Raises:
      TrainingDiverged: the loss became NaN (the last good checkpoint is kept).
      TrainingInterrupted: a stop signal arrived (a checkpoint was saved first).
    """
    config = config.replace(batch_norm=True)
    strategy = strategy or make_strategy(options.strategy)
    chief = _is_chief(strategy)
    _check_model_dir(options.model_dir, config)
    if options.mixed_precision:
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
        tf_keras.mixed_precision.set_global_policy(policy)
    lambdas = dict(zip(DEFAULT_LAMBDAS, options.lambdas))
    replicas = strategy.num_replicas_in_sync
    if options.batch_size % replicas:
        raise ValueError(f"batch_size {options.batch_size} is not divisible by the "
                         f"{replicas} replicas of --strategy {options.strategy}")

    with strategy.scope():
        model = build_icnet(config, options.crop_size)
        schedule = tf_keras.optimizers.schedules.PolynomialDecay(
            options.learning_rate, options.steps, end_learning_rate=0.0,
            power=options.poly_power)
        if options.optimizer == "adam":
            optimizer = tf_keras.optimizers.Adam(schedule)
        else:
            optimizer = tf_keras.optimizers.SGD(schedule, momentum=options.momentum)
        if options.mixed_precision and tf.config.list_physical_devices("GPU"):
            optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
        checkpoint = checkpoint_for(model, optimizer=optimizer)
    write_dir = _checkpoint_dir(options.model_dir, strategy)
    manager = tf.train.CheckpointManager(checkpoint, write_dir, options.max_checkpoints)
    resumed_from = tf.train.latest_checkpoint(options.model_dir)
    if resumed_from:
        # Optimizer slots are restored when first created; expect_partial silences the
        # warnings a run that stops before any step would print about them.
        checkpoint.restore(resumed_from).assert_existing_objects_matched().expect_partial()
        logging.info("resumed from %s (step %d)", resumed_from, int(optimizer.iterations.numpy()))
    elif init_weights is not None:
        load_initial_weights(model, config, *init_weights)
    # Written once the model builds and its initial weights load, so that a first run refused
    # for its widths, crop or weights leaves no plan.json pinning the next attempt to them.
    plan_path = os.path.join(options.model_dir, PLAN_FILENAME)
    if chief and not os.path.isfile(plan_path):
        os.makedirs(options.model_dir, exist_ok=True)
        config.save(plan_path)
    start = int(optimizer.iterations.numpy())
    if start >= options.steps:
        logging.info("already trained to step %d of %d; nothing to do", start, options.steps)
        return {"step": start, "resumed": bool(resumed_from), "losses": {}, "seconds": 0.0}

    variables = _trainable_variables(model, options.train_beta_gamma)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            outputs = model(images, training=options.update_mean_var)
            loss, branches = cascade_loss(outputs, labels, config.num_classes, lambdas)
            total = loss + weight_decay(model, options.weight_decay)
            scaled = total / replicas
            if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
                scaled = optimizer.get_scaled_loss(scaled)
        gradients = tape.gradient(scaled, variables)
        if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
            gradients = optimizer.get_unscaled_gradients(gradients)
        optimizer.apply_gradients(zip(gradients, variables))
        return {"total": total, "loss": loss, **branches}

    @tf.function
    def train_step(batch):
        per_replica = strategy.run(replica_step, args=batch)
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()}

    # A resumed run draws fresh batches (seeded by the step) rather than replaying old ones.
    batches = train_dataset(source, options.crop_size, options.batch_size,
                            options.random_scale, options.random_mirror,
                            seed=options.seed + start, cache=options.cache_examples)
    options_data = tf.data.Options()
    options_data.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    iterator = iter(strategy.experimental_distribute_dataset(batches.with_options(options_data)))
    summary_dir = os.path.join(options.model_dir, "train" if chief else ".worker_summaries")
    writer = tf.summary.create_file_writer(summary_dir)
    palette = palette_for(config.num_classes)
    begin = time.time()
    window_start, window_images = time.time(), 0
    losses: dict[str, float] = {}
    step = start
    with _StopSignals() as stop, writer.as_default():
        while step < options.steps:
            batch = next(iterator)
            losses = {k: float(v) for k, v in train_step(batch).items()}
            step = int(optimizer.iterations.numpy())
            window_images += options.batch_size
            if not np.isfinite(losses["total"]):
                raise TrainingDiverged(
                    f"loss became {losses['total']} at step {step}; stopped without saving. "
                    f"The last good checkpoint is {manager.latest_checkpoint or 'none'}; "
                    f"lower --learning_rate and rerun to resume from it")
            if step % options.log_every == 0 or step == options.steps:
                elapsed = time.time() - window_start
                speed = window_images / max(elapsed, 1e-9)
                eta = (options.steps - step) * options.batch_size / max(speed, 1e-9)
                lr = float(schedule(step))
                logging.info(
                    "step %d/%d  loss %.4f (sub4 %.3f sub24 %.3f sub124 %.3f)  total %.4f  "
                    "lr %.2e  %.1f img/s  ETA %s", step, options.steps, losses["loss"],
                    losses["sub4_out"], losses["sub24_out"], losses["conv6_cls"],
                    losses["total"], lr, speed, _format_eta(eta))
                for name, value in losses.items():
                    tf.summary.scalar(f"loss/{name}", value, step=step)
                tf.summary.scalar("learning_rate", lr, step=step)
                tf.summary.scalar("images_per_second", speed, step=step)
                window_start, window_images = time.time(), 0
            if step % options.image_summary_every == 0:
                _image_summary(model, batch, palette, step, strategy)
            if step % options.checkpoint_every == 0 or step == options.steps:
                manager.save(checkpoint_number=step)
            if stop.received is not None:
                manager.save(checkpoint_number=step)
                raise TrainingInterrupted(
                    f"stopped by signal {stop.received} at step {step}; checkpoint saved in "
                    f"{options.model_dir}; rerun the same command to resume")
    writer.flush()
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    summary = {"step": step, "resumed": bool(resumed_from), "losses": losses,
               "replicas": replicas, "seconds": round(time.time() - begin, 1)}
    if chief:
        atomic_write_bytes(os.path.join(options.model_dir, "train_summary.json"),
                           json.dumps(summary, indent=1).encode())
    return summary


def _image_summary(model, batch, palette, step, strategy) -> None:
    """The first crop of the batch beside its predicted class overlay."""
    images = strategy.experimental_local_results(batch[0])[0][:1]
    logits = model(images, training=False)["conv6_cls"]
    classes = tf.image.resize(tf.argmax(logits, -1)[..., None], images.shape[1:3],
                              method="nearest")[0, ..., 0].numpy()
    image = images[0].numpy().astype(np.uint8)
    blended = overlay(image, classes, palette)
    tf.summary.image("prediction", np.concatenate([image, blended], axis=1)[None], step=step)
