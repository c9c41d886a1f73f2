"""What the TensorBoard summaries cost: the same run with and without them, epoch by epoch in turns.

Two runs of one config are built in one process, one with the default observers and one with
`--no-summaries`, and their epochs alternate (on, off, on, off, ...), so load from other processes
on the machine falls on both alike. Per epoch it records the training throughput (the steps alone,
as `metrics.json` counts it) and the epoch's wall time (steps, validation, checkpoint and the
observers' epoch-end work); the one-off work at the start and end of a run is timed apart.
"""
from __future__ import annotations

import time

import numpy as np

from mlp_core.checkpointing import Checkpointer, GracefulStop
from mlp_core.config import Config, with_overrides
from mlp_core.hooks import RunContext
from mlp_core.loop import EVAL_BATCH, build_context, default_observers, train_epoch
from mlp_core.pipeline import eval_dataset


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


class _Run:
    """One of the two runs, stepped one epoch at a time."""

    def __init__(self, config: Config):
        self.ctx: RunContext = build_context(config, "auto")
        self.ckpt, self.observers = Checkpointer(self.ctx), default_observers(self.ctx.config)
        self.val = eval_dataset(self.ctx.val, EVAL_BATCH, self.ctx.device)
        self.begin = _timed(lambda: [o.on_run_begin(self.ctx) for o in self.observers])
        self.rates, self.walls, self.history = [], [], []

    def epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        record = train_epoch(self.ctx, self.ckpt, epoch, self.observers, GracefulStop())
        record = {"epoch": epoch, **{f"train_{k}": v for k, v in record.items()},
                  **{f"val_{k}": v for k, v in self.ctx.trainer.evaluate(self.val).items()}}
        self.history.append(record)
        self.ckpt.state.end_epoch(self.history)
        self.ckpt.save()
        for observer in self.observers:
            observer.on_epoch_end(self.ctx, epoch, record)
        self.walls.append(time.perf_counter() - start)
        self.rates.append(record["train_examples_per_sec"])

    def end(self) -> float:
        metrics = {"test_loss": 0.0, "test_accuracy": 0.0}
        return _timed(lambda: [o.on_run_end(self.ctx, metrics) for o in self.observers])


def measure(config: Config) -> dict:
    """Median throughput and epoch wall time with and without summaries over `config.epochs`
    epochs each (the first, which traces the steps, is left out), and the one-off times."""
    name = config.run_name or "cost"
    runs = {mode: _Run(with_overrides(config, summaries=mode == "on", run_name=f"{name}-{mode}"))
            for mode in ("on", "off")}
    for epoch in range(1, config.epochs + 1):
        for run in runs.values():
            run.epoch(epoch)
    result = {}
    for mode, run in runs.items():
        result[mode] = {"examples_per_sec": float(np.median(run.rates[1:])),
                        "epoch_seconds": float(np.median(run.walls[1:])),
                        "rates": run.rates, "epoch_walls": run.walls,
                        "run_begin_seconds": run.begin, "run_end_seconds": run.end()}
    on, off = result["on"], result["off"]
    result["throughput_cost"] = 1 - on["examples_per_sec"] / off["examples_per_sec"]
    pairs = [1 - a / b for a, b in zip(on["rates"][1:], off["rates"][1:])]
    result["paired_throughput_cost"] = float(np.median(pairs))  # median of the epoch pairs
    result["extra_seconds_per_epoch"] = on["epoch_seconds"] - off["epoch_seconds"]
    return result
