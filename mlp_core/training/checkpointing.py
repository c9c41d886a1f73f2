"""Checkpoints that let a killed run continue bit-identically, and graceful stops on signals.

A checkpoint holds the model (with its dropout generator), the optimizer (slots, step counter), the
running train metrics of the current epoch, the run's progress (completed epochs, history, elapsed
time) and, when batches are prefetched on the host, the tf.data iterator itself. The training
stream is a pure function of (seed, epoch, batch), so on a device-prefetch pipeline, whose iterator
tf.data cannot serialize, and under a tf.distribute strategy, the iterator is rebuilt at the saved
step instead.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow as tf

from mlp_core.core.errors import Interrupted, UserError
from mlp_core.core.pipeline import train_dataset
from mlp_core.distribute.preemption import PeerStopped, StopAgreement
from mlp_core.distribute.replicas import replica_batches
from mlp_core.distribute.strategy import is_chief
from mlp_core.observers.base import RunContext
from mlp_core.training.rundir import CHECKPOINTS

KEEP_CHECKPOINTS = 3


def saved_checkpoints(directory: str | Path) -> list[str]:
    """The checkpoints the manager keeps in `directory`, newest first (empty if none yet)."""
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return []
    # TensorFlow has already joined relative entries of the state file onto `directory`.
    paths = list(state.all_model_checkpoint_paths or [state.model_checkpoint_path])
    return list(reversed(paths))


def restore_newest(directory: str | Path, exact: bool = False, **objects) -> str | None:
    """Restore the newest checkpoint that reads back whole; say which newer ones were skipped.

    A checkpoint can be damaged on disk (a checksum mismatch, a missing shard). The older ones the
    manager keeps are a good place to continue from, so one bad file costs a few steps, not the
    run. Nothing is deleted; if no checkpoint restores, that is an error.

    Every object passed must be in the checkpoint, whole; with `exact`, the checkpoint must also
    hold nothing else the run would drop (a resume restores everything a run saved, while
    evaluation may take the weights alone). A mismatch is an error at once, not a skip: it comes
    from the run's configuration, so the older checkpoints share it.
    """
    paths = saved_checkpoints(directory)
    for number, path in enumerate(paths):
        try:
            status = tf.train.Checkpoint(**objects).read(path)
            held = saved_objects(path)
        except (tf.errors.OpError, ValueError) as err:
            reason = (getattr(err, "message", None) or str(err)).strip().splitlines()[0][:160]
            later = (
                f"trying {Path(paths[number + 1]).name}" if number + 1 < len(paths) else "none left"
            )
            print(
                f"warning: skipped {Path(path).name}, it does not restore ({reason}); {later}",
                file=sys.stderr,
            )
            continue
        check_objects(path, held, set(objects), exact)
        _check_matched(path, status)
        return path
    if paths:
        raise UserError(
            f"{directory}: none of the {len(paths)} checkpoints restores "
            f"({', '.join(Path(p).name for p in paths)}); nothing was deleted"
        )
    return None


# Parts that only some runs save (a top-level object, or the scope of a variable's name), and the
# flag that makes a run save them.
SAVED_WITH = {"ema_model": "--ema-decay", "loss_scale": "--precision mixed_float16"}
# What a checkpoint holds beside the run's objects: the manager's counter, a host pipeline's iterator.
BOOKKEEPING = {"save_counter", "iterator"}


def saved_objects(path: str) -> set[str]:
    """The names of the top-level objects a checkpoint holds (every one of ours has variables)."""
    keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    return {key.split("/", 1)[0] for key in keys if "/" in key}


def check_objects(path: str, held: set[str], expected: set[str], exact: bool) -> None:
    """One line naming a part the run expects that the checkpoint lacks, or (`exact`) one it
    holds that the run would silently drop."""
    for name in sorted(expected - held):
        flag = SAVED_WITH.get(name)
        cause = f"a run without {flag}" if flag else "another program"
        raise UserError(f"checkpoint {path} has no {name}: it was written by {cause}")
    for name in sorted(held - expected - BOOKKEEPING) if exact else ():
        flag = SAVED_WITH.get(name)
        cause = f"a run with {flag}" if flag else "another program"
        raise UserError(
            f"checkpoint {path} holds {name}, which this run does not keep: it was written by {cause}"
        )


def _check_matched(path: str, status) -> None:
    """Every variable of the objects must have found its value: a part with other contents (e.g.
    another optimizer's slots, or a loss-scaling wrapper's scale) would keep its initial values."""
    try:
        status.assert_existing_objects_matched()
    except AssertionError as err:
        names = sorted(
            {name.split(":")[0] for name in re.findall(r"<tf\.Variable '([^']+)'", str(err))}
        )
        flags = sorted(
            {SAVED_WITH[n.split("/")[0]] for n in names if n.split("/")[0] in SAVED_WITH}
        )
        cause = f"a run without {flags[0]}" if flags else "a run with another configuration"
        raise UserError(
            f"checkpoint {path} lacks variables this run has ({', '.join(names[:4]) or 'unnamed'}): "
            f"it was written by {cause}"
        ) from None
    status.expect_partial()  # the parts that were not asked for, e.g. the optimizer for evaluation


class RunState(tf.Module):
    """Progress that is not in the model or optimizer."""

    def __init__(self):
        super().__init__(name="run_state")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history_json")
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")

    def records(self) -> list[dict]:
        return json.loads(self.history.numpy().decode())

    def end_epoch(self, history: list[dict]) -> None:
        self.history.assign(json.dumps(history))
        self.epoch.assign(len(history))


class Checkpointer:
    """Owns the run's checkpoint manager and the iterator of training batches."""

    def __init__(self, ctx: RunContext, resume: bool = False):
        self.ctx, self.state = ctx, RunState()
        self._started = time.perf_counter()
        trainer = ctx.trainer
        self._progress = dict(
            model=trainer.model,
            optimizer=trainer.optimizer,
            train_metrics=trainer.train_metrics,
            global_step=trainer.global_step,
            state=self.state,
        )
        if trainer.ema is not None:
            self._progress["ema_model"] = trainer.ema.shadow
        self.restored = (
            restore_newest(ctx.run_dir / CHECKPOINTS, exact=True, **self._progress)
            if resume
            else None
        )
        self._prior_seconds = float(self.state.elapsed.numpy())
        # A host pipeline's iterator serializes (device-prefetching and distributed ones cannot).
        on_device = (
            trainer.device_data is not None
        )  # no iterator: batches come from the step number
        self._saves_iterator = ctx.device is None and not trainer.distributed and not on_device
        self.batches = None if on_device else self._open_batches(resume)
        saved = dict(self._progress)
        if self._saves_iterator:
            saved["iterator"] = self.batches
        self.manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**saved),
            checkpoint_dir(ctx),
            max_to_keep=KEEP_CHECKPOINTS,
            step_counter=trainer.global_step,
        )

    @property
    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(str(self.ctx.run_dir / CHECKPOINTS))

    @property
    def step(self) -> int:
        """Train steps completed over the whole run."""
        return int(self.ctx.trainer.global_step.numpy())

    def elapsed(self) -> float:
        """Wall seconds of the run so far, over every process that worked on it."""
        return self._prior_seconds + time.perf_counter() - self._started

    def save(self) -> str:
        self.state.elapsed.assign(self.elapsed())
        try:
            return self.manager.save(checkpoint_number=self.step)
        except (OSError, tf.errors.OpError) as err:
            raise UserError(
                f"{self.ctx.run_dir / CHECKPOINTS}: cannot write a checkpoint: "
                f"{getattr(err, 'message', err)}"
            ) from None

    def start_epoch(self, epoch: int) -> None:
        """Device-resident data draws the order of epoch `epoch` (1-based) for its in-graph batches."""
        if self.ctx.trainer.device_data is not None:
            self.ctx.trainer.device_data.set_epoch(epoch - 1)

    def _open_batches(self, resume: bool) -> Iterator:
        """Host pipelines restore their saved iterator; others are rebuilt at the saved step."""
        if resume and self.restored is not None and self._saves_iterator:
            batches = iter(self._dataset(0, 0))
            try:
                tf.train.Checkpoint(iterator=batches).read(
                    self.restored
                ).assert_existing_objects_matched()
                return batches
            except AssertionError:
                pass  # saved by a device-prefetching or distributed run: rebuild by position
        return iter(self._dataset(*divmod(self.step, self.ctx.steps_per_epoch)))

    def _dataset(self, epoch: int, offset: int):
        return train_batches(self.ctx, start_epoch=epoch, skip_batches=offset)


class GracefulStop:
    """While active, SIGINT and SIGTERM only set `signum`; the loop saves and exits between steps.

    Under multi_worker the workers first agree (`StopAgreement`): a signal to any one of them stops
    all of them after the same step, each with its own checkpoint of that step.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, agreement: StopAgreement | None = None):
        self.signum: int | None = None
        self.agreement = agreement
        self._previous: dict[int, Any] = {}

    @classmethod
    def for_run(cls, ctx: RunContext) -> GracefulStop:
        multi_worker = ctx.config.strategy == "multi_worker"
        return cls(StopAgreement(ctx.trainer.strategy) if multi_worker else None)

    def __enter__(self) -> GracefulStop:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._request)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _request(self, signum: int, frame) -> None:
        self.signum = signum

    def requested(self, step: int, count: int) -> int | None:
        """The signal to stop on after the call of `count` steps that ended at `step`, or None.

        Alone, this process's own signal, at once; under multi_worker, any worker's, at the next
        step where all of them check.
        """
        if self.agreement is None:
            return self.signum
        return self.agreed() if self.agreement.due(step, count) else None

    def agreed(self) -> int | None:
        """Any worker's signal, or None (this process's own without multi_worker). Under
        multi_worker every worker must call this at the same point of the run."""
        if self.agreement is None:
            return self.signum
        anyone = self.agreement.agree(self.signum)  # a collective: every worker takes part
        return self.signum or anyone

    def wait_for_peers(self) -> None:
        """Under multi_worker, return once every worker has got here (a collective); a worker
        that left first would cut its peers' last collectives short."""
        if self.agreement is not None:
            self.agreement.agree(None)

    def interrupted(self, signum: int, step: int, config) -> Interrupted:
        """The error that ends this process: stopped by its own signal, or with a peer."""
        return (
            Interrupted(signum, step, config) if self.signum else PeerStopped(signum, step, config)
        )


def check_same_step(ctx: RunContext, step: int) -> None:
    """Every worker must start from the same step. A worker that cannot see the chief's checkpoints
    would otherwise train a different model in lock-step with the others, silently."""
    strategy = ctx.trainer.strategy
    if ctx.config.strategy != "multi_worker":
        return
    per_replica = strategy.run(lambda: tf.constant(step, tf.int64))
    total = int(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
    if total != step * strategy.num_replicas_in_sync:
        raise UserError(
            f"the workers would start from different steps (this one from step {step}); every "
            f"worker must see the chief's checkpoints in {ctx.run_dir / CHECKPOINTS}"
        )


def checkpoint_dir(ctx: RunContext) -> Path:
    """Where this process saves checkpoints.

    Every worker saves (saving may take part in collectives), but only the chief into the run
    directory; the others save into a temporary directory, removed when the process exits, as
    TensorFlow's multi-worker guide prescribes.
    """
    if is_chief(ctx.trainer.strategy):
        return ctx.run_dir / CHECKPOINTS
    scratch = tempfile.mkdtemp(prefix="mlp_core-worker-checkpoints-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return Path(scratch)


def train_batches(
    ctx: RunContext, start_epoch: int, skip_batches: int
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The training stream from (epoch, batch) on, as the trainer's strategy feeds its replicas.

    Each worker builds its own input pipeline (`distribute_datasets_from_function`) and keeps only
    its replicas' contiguous slices of each global batch. Under the default strategy this is the
    plain dataset, prefetched to the run's device.
    """
    config, trainer = ctx.config, ctx.trainer
    balance = config.balance == "oversample"
    if not trainer.distributed:
        return train_dataset(
            ctx.train,
            config.batch_size,
            config.seed,
            ctx.device,
            start_epoch,
            skip_batches,
            balance,
        )

    def worker_dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local
        return replica_batches(
            ctx.train,
            config.batch_size,
            config.seed,
            start_epoch,
            skip_batches,
            context.num_replicas_in_sync,
            range(first, first + local),
            balance,
        )

    return trainer.strategy.distribute_datasets_from_function(worker_dataset)
