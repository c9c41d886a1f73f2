"""Observers: how summaries, exports and other side jobs attach to the loop without living in it.

The loop calls these hooks between compiled steps, never inside them. A hook that reads a tensor
(`.numpy()`) forces a device sync, so per-step hooks should read only every N steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tensorflow as tf

from mlp_core.config.config import Config
from mlp_core.core.data import Split

if TYPE_CHECKING:  # the loop builds the trainer and hands it to observers; they never build one
    from mlp_core.training.trainer import Trainer


@dataclass
class RunContext:
    """What an observer may look at: the run's settings, directory, data and trainer."""

    config: Config
    run_dir: Path
    trainer: Trainer
    train: Split
    val: Split
    test: Split
    steps_per_epoch: int
    device: str | None = None


class Observer:
    """Base class: override the hooks you need. `step` counts train steps from 1 over the run;
    with several steps per compiled call, `on_step_end` sees the last step of each call."""

    def on_run_begin(self, ctx: RunContext) -> None:
        pass

    def on_call_begin(self, ctx: RunContext, step: int, count: int) -> None:
        """Before a compiled call that runs steps `step + 1` .. `step + count`."""

    def on_step_end(self, ctx: RunContext, step: int, loss: tf.Tensor) -> None:
        """After a call; `loss` is the objective of its last step."""

    def on_epoch_end(self, ctx: RunContext, epoch: int, record: dict) -> None:
        pass

    def on_run_end(self, ctx: RunContext, metrics: dict) -> None:
        pass
