"""The training loop: `train_and_evaluate(config)` builds everything, trains, and writes the run.

Python bookkeeping (progress, timing, history, files) stays here, outside the compiled steps; the
loop touches device values only to draw progress and at epoch ends.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterator, Sequence

import tensorflow as tf

from mlp_core import data as mnist
from mlp_core.config import Config
from mlp_core.console import ProgressBar
from mlp_core.errors import DivergedError, UserError
from mlp_core.hooks import Observer, RunContext
from mlp_core.model import MLP
from mlp_core.optim import make_optimizer, make_schedule
from mlp_core.pipeline import default_device, eval_dataset, steps_per_epoch, train_dataset
from mlp_core.rundir import CHECKPOINTS, METRICS, create_run_dir, load_config, write_json
from mlp_core.step import LossConfig, Trainer

EVAL_BATCH = 1000
KEEP_CHECKPOINTS = 3


def set_determinism(seed: int) -> None:
    """Same seed, same machine -> bit-identical results."""
    tf.random.set_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(config: Config) -> MLP:
    return MLP(config.hidden, config.activation, config.dropout, config.initializer, config.seed)


def build_trainer(config: Config, steps: int) -> Trainer:
    """Model, schedule, optimizer and loss settings, all from the config."""
    model = build_model(config)
    warmup = round(config.warmup_epochs * steps)
    schedule = make_schedule(config.schedule, config.lr, warmup, steps * config.epochs)
    optimizer = make_optimizer(config.optimizer, model.trainable_variables, schedule,
                               config.momentum, config.weight_decay)
    loss = LossConfig(config.normalize, config.label_smoothing, config.l2, config.clip_norm)
    return Trainer(model, optimizer, loss)


def load_splits(config: Config) -> tuple[mnist.Split, mnist.Split, mnist.Split]:
    """Train, validation (the last `val_size` training images) and test splits."""
    data = mnist.load_mnist(config.data_dir)
    train, val = mnist.split_validation(data.train, config.val_size)
    if config.train_subset:
        train = train.take(0, config.train_subset)
    if config.batch_size > len(train):
        raise UserError(f"--batch-size {config.batch_size} exceeds the {len(train)} training images")
    return train, val, data.test


def train_epoch(ctx: RunContext, batches: Iterator, first_step: int, bar: ProgressBar,
                observers: Sequence[Observer] = ()) -> dict:
    """Run one epoch of train steps; returns mean loss/accuracy and the epoch's wall time."""
    trainer = ctx.trainer
    trainer.train_metrics.reset()
    start = time.perf_counter()
    for step in range(first_step, first_step + ctx.steps_per_epoch):
        outputs = trainer.train_step(*next(batches))
        for observer in observers:
            observer.on_step_end(ctx, step, outputs)
        if bar.due():
            bar.draw(step - first_step + 1, **trainer.train_metrics.result())
    result = trainer.train_metrics.result()  # reading the sums waits for the device
    seconds = time.perf_counter() - start
    bar.draw(ctx.steps_per_epoch, **result, final=True)
    if not math.isfinite(result["loss"]):
        raise DivergedError(f"training loss became {result['loss']} (try a lower --lr)")
    return {**result, "seconds": seconds,
            "examples_per_sec": ctx.steps_per_epoch * bar.batch_size / seconds}


def run_epochs(ctx: RunContext, checkpoints: tf.train.CheckpointManager,
               observers: Sequence[Observer] = ()) -> list[dict]:
    """Train for `config.epochs`, validating and checkpointing after each epoch."""
    config, trainer = ctx.config, ctx.trainer
    batches = iter(train_dataset(ctx.train, config.batch_size, config.seed, ctx.device))
    val_ds = eval_dataset(ctx.val, EVAL_BATCH, ctx.device) if len(ctx.val) else None
    history = []
    for epoch in range(1, config.epochs + 1):
        lr = float(trainer.optimizer.learning_rate.numpy())
        bar = ProgressBar(epoch, config.epochs, ctx.steps_per_epoch, config.batch_size)
        first_step = (epoch - 1) * ctx.steps_per_epoch + 1
        record = {"epoch": epoch, "lr": lr,
                  **_prefixed("train", train_epoch(ctx, batches, first_step, bar, observers))}
        if val_ds is not None:
            record.update(_prefixed("val", trainer.evaluate(val_ds)))
        checkpoints.save(checkpoint_number=epoch)
        for observer in observers:
            observer.on_epoch_end(ctx, epoch, record)
        history.append(record)
    return history


def default_observers(config: Config) -> list[Observer]:
    """The side jobs every training run gets."""
    return []


def build_context(config: Config, device: str | None = "auto") -> RunContext:
    """Load data, make the run directory and build the trainer: everything before step one."""
    device = default_device() if device == "auto" else device
    set_determinism(config.seed)
    train, val, test = load_splits(config)
    run_dir = create_run_dir(config)
    steps = steps_per_epoch(train, config.batch_size)
    return RunContext(config, run_dir, build_trainer(config, steps), train, val, test, steps, device)


def train_and_evaluate(config: Config, device: str | None = "auto",
                       observers: Sequence[Observer] | None = None) -> dict:
    """Train one run end to end and write `logs/<run>/`; returns the metrics it wrote."""
    start = time.perf_counter()
    observers = default_observers(config) if observers is None else observers
    ctx = build_context(config, device)
    checkpoints = tf.train.CheckpointManager(_checkpoint(ctx.trainer), ctx.run_dir / CHECKPOINTS,
                                             max_to_keep=KEEP_CHECKPOINTS)
    for observer in observers:
        observer.on_run_begin(ctx)
    history = run_epochs(ctx, checkpoints, observers)
    test = ctx.trainer.evaluate(eval_dataset(ctx.test, EVAL_BATCH, ctx.device))
    metrics = {"run_dir": str(ctx.run_dir),
               **_final_metrics(history, test, time.perf_counter() - start)}
    write_json(ctx.run_dir / METRICS, metrics)
    for observer in observers:
        observer.on_run_end(ctx, metrics)
    return metrics


def load_trained_model(run_dir: str | Path) -> tuple[Config, MLP]:
    """Rebuild a run's model from its config and restore its latest checkpoint's weights."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    latest = tf.train.latest_checkpoint(str(run_dir / CHECKPOINTS))
    if latest is None:
        raise UserError(f"{run_dir}: no trained model (no checkpoint in {CHECKPOINTS}/)")
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return config, model


def _checkpoint(trainer: Trainer) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=trainer.model, optimizer=trainer.optimizer)


def _prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}_{key}": value for key, value in values.items()}


def _final_metrics(history: list[dict], test: dict, wall_seconds: float) -> dict:
    """metrics.json: final numbers first, then the per-epoch history.

    Throughput leaves out the first epoch when there are more, since it includes tracing.
    """
    timed = history[1:] or history
    examples = sum(h["train_examples_per_sec"] * h["train_seconds"] for h in timed)
    last = history[-1]
    return {
        "status": "completed",
        "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss"),
        "train_accuracy": last["train_accuracy"], "train_loss": last["train_loss"],
        "epochs": len(history),
        "train_examples_per_sec": examples / sum(h["train_seconds"] for h in timed),
        "wall_seconds": wall_seconds,
        "history": history,
    }
