"""What the TensorBoard summaries cost: the same run with and without them, epoch by epoch in turns.

Two runs of one config are built in one process, one with the default observers and one with
`--no-summaries`, and their epochs alternate (on, off, on, off, ...), so load from other processes
on the machine falls on both alike. Per epoch it records the training throughput (the steps alone,
as `metrics.json` counts it) and the epoch's wall time (steps, validation, checkpoint and the
observers' epoch-end work); the one-off work at the start and end of a run is timed apart. Each
observer's epoch-end work is also timed in process CPU seconds, which the load of other processes
inflates less than wall time.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mlp_core.config.config import Config, with_overrides
from mlp_core.core.pipeline import eval_dataset
from mlp_core.observers.base import Observer, RunContext
from mlp_core.training.checkpointing import Checkpointer, GracefulStop
from mlp_core.training.loop import EVAL_BATCH, build_context, default_observers, train_epoch


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


class _Timed(Observer):
    """Delegates to an observer and adds up the wall time of its per-call hooks, which run inside
    the training time an epoch's throughput is measured over."""

    def __init__(self, observer: Observer):
        self.observer, self.seconds = observer, 0.0

    def __getattr__(self, name: str):
        return getattr(self.observer, name)

    def on_run_begin(self, ctx: RunContext) -> None:
        self.observer.on_run_begin(ctx)

    def on_call_begin(self, ctx: RunContext, step: int, count: int) -> None:
        start = time.perf_counter()
        self.observer.on_call_begin(ctx, step, count)
        self.seconds += time.perf_counter() - start

    def on_step_end(self, ctx: RunContext, step: int, loss) -> None:
        start = time.perf_counter()
        self.observer.on_step_end(ctx, step, loss)
        self.seconds += time.perf_counter() - start

    def on_epoch_end(self, ctx: RunContext, epoch: int, record: dict) -> None:
        self.observer.on_epoch_end(ctx, epoch, record)

    def on_run_end(self, ctx: RunContext, metrics: dict) -> None:
        self.observer.on_run_end(ctx, metrics)


class _Run:
    """One of the two runs, stepped one epoch at a time."""

    def __init__(self, config: Config):
        self.ctx: RunContext = build_context(config, "auto")
        self.ckpt = Checkpointer(self.ctx)
        self.observers = [_Timed(o) for o in default_observers(self.ctx.config)]
        self.val = eval_dataset(self.ctx.val, EVAL_BATCH, self.ctx.device)
        self.begin = _timed(self._run_begin)
        self.rates: list[float] = []
        self.walls: list[float] = []
        self.history: list[dict] = []
        self.in_training: list[float] = []
        self.epoch_ends: dict[str, list[tuple[float, float]]] = {}  # (wall, CPU) s per observer

    def _run_begin(self) -> None:
        for observer in self.observers:
            observer.on_run_begin(self.ctx)

    def epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        hooks = sum(o.seconds for o in self.observers)
        train, _bar = train_epoch(self.ctx, self.ckpt, epoch, self.observers, GracefulStop())
        self.in_training.append(sum(o.seconds for o in self.observers) - hooks)
        record = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in train.items()},
            **{f"val_{k}": v for k, v in self.ctx.trainer.evaluate(self.val).items()},
        }
        self.history.append(record)
        self.ckpt.state.end_epoch(self.history)
        self.ckpt.save()
        for observer in self.observers:
            wall, cpu = time.perf_counter(), time.process_time()
            observer.on_epoch_end(self.ctx, epoch, record)
            spent = self.epoch_ends.setdefault(type(observer.observer).__name__, [])
            spent.append((time.perf_counter() - wall, time.process_time() - cpu))
        self.walls.append(time.perf_counter() - start)
        self.rates.append(record["train_examples_per_sec"])

    def end(self) -> float:
        return _timed(self._run_end, {"test_loss": 0.0, "test_accuracy": 0.0})

    def _run_end(self, metrics: dict) -> None:
        for observer in self.observers:
            observer.on_run_end(self.ctx, metrics)


def measure(config: Config) -> dict:
    """Median throughput and epoch wall time with and without summaries over `config.epochs`
    epochs each (the first, which traces the steps, is left out), and the one-off times."""
    name = config.run_name or "cost"
    runs = {
        mode: _Run(with_overrides(config, summaries=mode == "on", run_name=f"{name}-{mode}"))
        for mode in ("on", "off")
    }
    for epoch in range(1, config.epochs + 1):
        for run in runs.values():
            run.epoch(epoch)
    result: dict[str, Any] = {}
    for mode, run in runs.items():
        result[mode] = {
            "examples_per_sec": float(np.median(run.rates[1:])),
            "epoch_seconds": float(np.median(run.walls[1:])),
            "rates": run.rates,
            "epoch_walls": run.walls,
            "hook_seconds_in_training": float(np.median(run.in_training[1:])),
            "run_begin_seconds": run.begin,
            "run_end_seconds": run.end(),
            "epoch_end_seconds": {
                name: [float(np.median(c)) for c in zip(*times[1:])]
                for name, times in run.epoch_ends.items()
            },
        }
    on, off = result["on"], result["off"]
    result["throughput_cost"] = 1 - on["examples_per_sec"] / off["examples_per_sec"]
    pairs = [1 - a / b for a, b in zip(on["rates"][1:], off["rates"][1:])]
    result["paired_throughput_cost"] = float(np.median(pairs))  # median of the epoch pairs
    result["extra_seconds_per_epoch"] = on["epoch_seconds"] - off["epoch_seconds"]
    return result
