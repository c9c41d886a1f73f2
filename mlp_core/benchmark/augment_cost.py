"""What the augmentation costs: training throughput of the same model with and without it.

Both trainers are built in one process and timed in turns (A, B, A, B, ...), each turn the same
number of steps on the device-resident data, and the median of the turns is reported, because
other work on a shared machine comes and goes between turns.
"""

from __future__ import annotations

import statistics
import time

from mlp_core.config.config import Config, with_overrides
from mlp_core.core.pipeline import steps_per_epoch
from mlp_core.fastpaths import choose as fastpaths
from mlp_core.training.loop import load_splits
from mlp_core.training.trainer import build_trainer

CALL = 16  # steps per compiled call, the CPU default


def augmentation_cost(config: Config, rounds: int = 7, calls: int = 2) -> dict:
    """Median examples/s of `config` with augmentation off and as configured, timed in turns."""
    base = fastpaths.resolve(with_overrides(config, data_on_device=True, steps_per_call=CALL), None)
    train, _, _ = load_splits(base)
    variants = {"none": with_overrides(base, augment="none"), base.augment: base}
    trainers = {
        name: build_trainer(c, steps_per_epoch(train, c.batch_size), train, None)
        for name, c in variants.items()
    }
    for trainer in trainers.values():  # trace and warm up outside the timed turns
        assert trainer.device_data is not None
        trainer.device_data.set_epoch(0)
        trainer.train_steps(None, CALL).numpy()
    turns: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for _ in range(calls):
                outputs = trainer.train_steps(None, CALL)
            outputs.numpy()
            turns[name].append(calls * CALL * base.batch_size / (time.perf_counter() - start))
    return {
        "hidden": list(base.hidden),
        "batch_size": base.batch_size,
        "precision": base.precision,
        "rounds": rounds,
        "steps_per_turn": calls * CALL,
        "examples_per_sec": {name: statistics.median(t) for name, t in turns.items()},
        "turns": turns,
    }
