"""The training loop: `train_and_evaluate(config)` builds everything, trains, and writes the run.

Python bookkeeping (progress, timing, history, checkpoints, signals, files) stays here, outside
the compiled steps; the loop reads device values only to draw progress, to check for divergence
every few steps, and at epoch ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from mlp_core.config.config import Config, with_overrides
from mlp_core.core import data as mnist
from mlp_core.core.errors import DivergedError, UserError
from mlp_core.core.model import MLP
from mlp_core.core.pipeline import default_device, eval_dataset, steps_per_epoch
from mlp_core.distribute.strategy import is_chief, make_strategy, worker_failures
from mlp_core.fastpaths import choose as fastpaths
from mlp_core.observers.base import Observer, RunContext
from mlp_core.observers.dynamics import DynamicsObserver
from mlp_core.observers.profiling import ProfilerObserver, step_marker
from mlp_core.observers.projector import ProjectorObserver
from mlp_core.observers.summaries import TensorBoardObserver
from mlp_core.serving.export import ExportObserver
from mlp_core.training.checkpointing import (
    Checkpointer,
    GracefulStop,
    check_same_step,
    restore_newest,
)
from mlp_core.training.console import ProgressBar
from mlp_core.training.rundir import (
    CHECKPOINTS,
    METRICS,
    create_run_dir,
    default_run_name,
    load_config,
    open_run_dir,
    run_lock,
    run_path,
    write_json,
)
from mlp_core.training.trainer import build_model, build_trainer

EVAL_BATCH = 1000
DIVERGENCE_CHECK_EVERY = 16


def set_determinism(seed: int) -> None:
    """Same seed, same machine -> bit-identical results."""
    tf.random.set_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_splits(config: Config) -> tuple[mnist.Split, mnist.Split, mnist.Split]:
    """Train, validation (the last `val_size` training images) and test splits."""
    data = mnist.load_mnist(config.data_dir)
    train, val = mnist.split_validation(data.train, config.val_size)
    if config.train_subset:
        train = train.take(0, config.train_subset)
    if config.batch_size > len(train):
        raise UserError(
            f"--batch-size {config.batch_size} exceeds the {len(train)} training images"
        )
    return train, val, data.test


def train_epoch(
    ctx: RunContext,
    ckpt: Checkpointer,
    epoch: int,
    observers: Sequence[Observer],
    stop: GracefulStop,
) -> tuple[dict, ProgressBar]:
    """Run epoch `epoch` from where the run stands (its start, or mid-epoch after a resume).

    Returns the epoch's train results and its progress bar, which the caller finishes once the
    validation result is known.

    Steps run in calls of up to `steps_per_call`, aligned to multiples of it and never across an
    epoch end; observers, checks and checkpoints happen between calls.
    """
    trainer, steps, per_call = ctx.trainer, ctx.steps_per_epoch, ctx.config.steps_per_call
    first, last = ckpt.step + 1, epoch * steps
    if first == (epoch - 1) * steps + 1:
        trainer.train_metrics.reset()
    ckpt.start_epoch(epoch)
    bar = ProgressBar(
        epoch, ctx.config.epochs, steps, ctx.config.batch_size, done=first - 1 - (epoch - 1) * steps
    )
    start, step = time.perf_counter(), first - 1
    while step < last:
        count = min(per_call - step % per_call, last - step)
        for observer in observers:
            observer.on_call_begin(ctx, step, count)
        with step_marker(step + count):  # a profiled step is one call
            outputs = trainer.train_steps(ckpt.batches, count)
        step += count
        for observer in observers:
            observer.on_step_end(ctx, step, outputs)
        between_steps(ctx, ckpt, step, count, stop)
        if bar.due():
            bar.draw(step - (epoch - 1) * steps, **trainer.train_metrics.result())
    result = trainer.train_metrics.result()  # reading the sums waits for the device
    seconds = time.perf_counter() - start
    check_divergence(ctx, ckpt, last)
    return {
        **result,
        "seconds": seconds,
        "examples_per_sec": (last - first + 1) * ctx.config.batch_size / max(seconds, 1e-9),
    }, bar


def crossed(step: int, count: int, every: int) -> bool:
    """Whether the last `count` steps, ending at `step`, passed a multiple of `every`."""
    return every > 0 and step // every > (step - count) // every


def between_steps(
    ctx: RunContext, ckpt: Checkpointer, step: int, count: int, stop: GracefulStop
) -> None:
    """Divergence checks, periodic checkpoints and signal stops, all outside the compiled step."""
    save = crossed(step, count, ctx.config.checkpoint_every) and step % ctx.steps_per_epoch != 0
    signum = stop.requested(step, count)
    if signum is not None or save or crossed(step, count, DIVERGENCE_CHECK_EVERY):
        check_divergence(ctx, ckpt, step)
    if signum is not None:
        ckpt.save()
        stop.wait_for_peers()  # no worker leaves while another still saves
        raise stop.interrupted(signum, step, ctx.config)
    if save:
        ckpt.save()


def check_divergence(ctx: RunContext, ckpt: Checkpointer, step: int) -> None:
    """Stop before a non-finite loss, gradient or weight can reach a checkpoint."""
    if bool(ctx.trainer.diverged.numpy()) or not ctx.trainer.weights_finite():
        raise DivergedError(
            f"training diverged by step {step}: the loss, a gradient or a weight became non-finite; kept the last "
            f"good checkpoint ({Path(ckpt.latest or 'none').name}); try a lower --lr or a --clip-norm"
        )


def run_epochs(
    ctx: RunContext,
    ckpt: Checkpointer,
    observers: Sequence[Observer] = (),
    stop: GracefulStop | None = None,
) -> list[dict]:
    """Train the remaining epochs, validating and checkpointing after each."""
    config, trainer = ctx.config, ctx.trainer
    val_ds = eval_dataset(ctx.val, EVAL_BATCH, ctx.device) if len(ctx.val) else None
    history = ckpt.state.records()
    for epoch in range(len(history) + 1, config.epochs + 1):
        lr = epoch_start_rate(ctx, ckpt.step - (epoch - 1) * ctx.steps_per_epoch)
        train, bar = train_epoch(ctx, ckpt, epoch, observers, stop or GracefulStop())
        record = {"epoch": epoch, "lr": lr, **_prefixed("train", train)}
        if val_ds is not None:
            record.update(_prefixed("val", trainer.evaluate(val_ds)))
            if trainer.ema:  # what the average adds, on the same images
                record.update(_prefixed("val_last", trainer.evaluate(val_ds, last_weights=True)))
        bar.finish(train["loss"], train["accuracy"], record.get("val_accuracy"))
        history.append(record)
        ckpt.state.end_epoch(history)
        ckpt.save()
        for observer in observers:
            observer.on_epoch_end(ctx, epoch, record)
    return history


def epoch_start_rate(ctx: RunContext, done: int) -> float:
    """The rate of the epoch's first update, `done` steps into it: the schedule follows the
    optimizer's updates (a step float16 loss scaling skips does not advance it)."""
    optimizer = ctx.trainer.optimizer
    return float(optimizer.schedule(optimizer.iterations - done).numpy())


def default_observers(config: Config) -> list[Observer]:
    """The side jobs every training run gets."""
    observers: list[Observer] = []
    if config.profile_steps:
        observers.append(ProfilerObserver.from_flag(config.profile_steps))
    if config.summaries:
        summaries = TensorBoardObserver(config.log_every, config.histogram_every)
        observers += [summaries, DynamicsObserver(summaries), ProjectorObserver()]
    return [*observers, ExportObserver()]


def build_context(config: Config, device: str | None = "auto", resume: bool = False) -> RunContext:
    """Load data, open the run directory and build the trainer: everything before step one.

    The strategy comes first (`--logical-cpus` must split the CPU before TF sets up devices); the
    trainer's variables are created in its scope, so they are mirrored on every replica.
    """
    strategy = make_strategy(config)
    device = default_device() if device == "auto" else device
    config = fastpaths.resolve(config, device)
    set_determinism(config.seed)
    train, val, test = load_splits(config)
    if config.run_name is None:
        config = with_overrides(config, run_name=default_run_name())
    if is_chief(strategy):
        run_dir = open_run_dir(config) if resume else create_run_dir(config)
    else:  # the chief's; other workers only read checkpoints from it
        assert config.run_name is not None  # named above
        run_dir = run_path(config.logdir, config.run_name)
    steps = steps_per_epoch(train, config.batch_size)
    with strategy.scope():
        trainer = build_trainer(config, steps, train, device)
    return RunContext(config, run_dir, trainer, train, val, test, steps, device)


def train_and_evaluate(
    config: Config,
    device: str | None = "auto",
    observers: Sequence[Observer] | None = None,
    resume: bool = False,
) -> dict:
    """Train one run end to end (or continue it from its last checkpoint) and write its metrics.

    Under multi_worker only the chief writes metrics.json and runs the default observers; observers
    passed in run on every worker.
    """
    ctx = build_context(config, device, resume)
    chief = is_chief(ctx.trainer.strategy)
    with run_lock(ctx.run_dir, enabled=chief):  # other workers only read the chief's run
        return _train_locked(ctx, chief, observers, resume)


def _train_locked(
    ctx: RunContext, chief: bool, observers: Sequence[Observer] | None, resume: bool
) -> dict:
    """The body of `train_and_evaluate`, run while this process holds the run directory."""
    config = ctx.config
    if chief:
        print(f"{fastpaths.describe(ctx.config)} (device: {ctx.device or 'CPU'})", file=sys.stderr)
    if observers is None:
        observers = default_observers(config) if chief else []
    ckpt = Checkpointer(ctx, resume)
    check_same_step(ctx, ckpt.step)
    for observer in observers:
        observer.on_run_begin(ctx)
    with GracefulStop.for_run(ctx) as stop, worker_failures(ctx.config):
        try:
            history = run_epochs(ctx, ckpt, observers, stop)
        except DivergedError:
            if chief:
                write_json(
                    ctx.run_dir / METRICS,
                    {
                        "run_dir": str(ctx.run_dir),
                        "status": "diverged",
                        "step": ckpt.step,
                        "history": ckpt.state.records(),
                    },
                )
            raise
        test = ctx.trainer.evaluate(eval_dataset(ctx.test, EVAL_BATCH, ctx.device))
        signum = stop.agreed()
        if signum is not None:  # the last epoch is saved; a resume only evaluates again
            raise stop.interrupted(signum, ckpt.step, ctx.config)
    metrics = {"run_dir": str(ctx.run_dir), **_final_metrics(history, test, ckpt.elapsed())}
    if chief:
        write_json(ctx.run_dir / METRICS, metrics)
    for observer in observers:
        observer.on_run_end(ctx, metrics)
    return metrics


def load_trained_model(run_dir: str | Path) -> tuple[Config, MLP]:
    """Rebuild a run's evaluated model (the weight average, if it kept one) from its config and
    restore its newest checkpoint that reads back."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    model = build_model(config)
    # A run with a weight average was evaluated with it, so that is the model it hands on.
    key = "ema_model" if config.ema_decay else "model"
    if restore_newest(run_dir / CHECKPOINTS, **{key: model}) is None:
        raise UserError(f"{run_dir}: no trained model (no checkpoint in {CHECKPOINTS}/)")
    return config, model


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
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": last.get("val_accuracy"),
        "val_loss": last.get("val_loss"),
        "train_accuracy": last["train_accuracy"],
        "train_loss": last["train_loss"],
        "epochs": len(history),
        "train_examples_per_sec": examples / sum(h["train_seconds"] for h in timed),
        "wall_seconds": wall_seconds,
        "history": history,
    }
