"""tf.profiler traces for XProf (TensorBoard's Profile dashboard), and the step markers it needs.

XProf splits a trace into steps by the `step_num` of the host events that `step_marker` makes; the
loop puts one around every compiled call, so with several steps per call one marked step is one
call (all its steps). Outside a capture a marker costs one cheap check, so it is always there.
The pieces are reusable outside the loop (the benchmark profiles its timed variants with them):

    with profiling(directory):              # -> directory/plugins/profile/<timestamp>/
        for step in ...:
            with step_marker(step):
                trainer.train_steps(batches, count)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from mlp_core.config.config import parse_step_range
from mlp_core.core.errors import UserError
from mlp_core.observers.base import Observer, RunContext

_active: list[str] = []  # the directory of the capture in progress, if any (one per process)


def start(logdir: str | Path) -> None:
    """Start capturing; TensorFlow allows one capture per process at a time."""
    if _active:
        raise UserError(f"a profile is already being captured into {_active[0]}")
    tf.profiler.experimental.start(str(logdir))
    _active.append(str(logdir))


def stop() -> None:
    """Stop the capture in progress and write it out (a no-op when none is running)."""
    if _active:
        tf.profiler.experimental.stop()
        _active.clear()


def active() -> bool:
    return bool(_active)


@contextlib.contextmanager
def profiling(logdir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Capture a trace of what runs inside the block into `logdir/plugins/profile/<timestamp>/`,
    the layout TensorBoard's Profile dashboard reads with `--logdir logdir` (or its parent);
    the trace is written even when the block raises. `enabled=False` makes it a no-op."""
    if not enabled:
        yield
        return
    start(logdir)
    try:
        yield
    finally:
        stop()


def step_marker(step: int, name: str = "train") -> tf.profiler.experimental.Trace:
    """Mark one step for XProf (overview, step-time graph, input-pipeline analysis): use it as a
    context manager around the call that runs the step, numbered `step`."""
    return tf.profiler.experimental.Trace(name, step_num=int(step), _r=1)


class ProfilerObserver(Observer):
    """Captures the calls that run steps `first`..`last` (`--profile-steps A:B`) into the run
    directory. Calls are the unit: with several steps per call the capture starts before the call
    holding step `first` and stops after the one holding step `last`."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.capturing = first, last, False

    @classmethod
    def from_flag(cls, text: str) -> ProfilerObserver:
        try:
            return cls(*parse_step_range(text))
        except ValueError as error:
            raise UserError(f"--profile-steps: {error}") from None

    def on_run_begin(self, ctx: RunContext) -> None:
        total = ctx.config.epochs * ctx.steps_per_epoch
        if self.first > total:
            raise UserError(
                f"--profile-steps {self.first}:{self.last}: the run has only {total} steps"
            )

    def on_call_begin(self, ctx: RunContext, step: int, count: int) -> None:
        if not self.capturing and step < self.last and step + count >= self.first:
            start(ctx.run_dir)
            self.capturing = True

    def on_step_end(self, ctx: RunContext, step: int, loss: tf.Tensor) -> None:
        if self.capturing and step >= self.last:
            self.on_run_end(ctx, {})

    def on_run_end(self, ctx: RunContext, metrics: dict) -> None:
        if self.capturing:
            stop()
            self.capturing = False
