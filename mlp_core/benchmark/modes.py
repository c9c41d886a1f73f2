"""Benchmark modes beyond the variant table: the input pipeline alone, scaling over replicas, and
time to accuracy over several seeds.

Scaling runs each replica count in a child process (`python -m mlp_core.benchmark.modes`), because
TensorFlow splits the CPU into logical devices only before it first uses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mlp_core.benchmark.roofs import jitter
from mlp_core.config.config import Config
from mlp_core.core.data import Split
from mlp_core.core.errors import UserError
from mlp_core.core.pipeline import train_dataset
from mlp_core.fastpaths.device_data import DeviceData


def input_rates(
    train: Split, batch: int, device: str | None, batches: int, rounds: int = 3
) -> dict:
    """Batches/s of the tf.data stream and of the device-resident batches, with no step: a step
    slower than these is not input-bound."""
    stream = iter(train_dataset(train, batch, 0, device))
    data = DeviceData(train, batch, 0, device)
    data.set_epoch(0)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
    def resident(n):
        total = tf.zeros([], tf.float32)
        for i in tf.range(n):
            images, labels = data.batch(i % data.steps)
            total += tf.cast(images[0, 0], tf.float32) + labels[0, 0]
        return total

    def run_stream(n):
        for _ in range(n):
            images, _ = next(stream)
        images.numpy()

    rates: dict[str, list[float]] = {"tf_data": [], "device_data": []}
    run_stream(2), resident(tf.constant(2)).numpy()
    for _ in range(rounds):
        for name, run in (
            ("tf_data", run_stream),
            ("device_data", lambda n: resident(tf.constant(n)).numpy()),
        ):
            start = time.perf_counter()
            run(batches)
            rates[name].append(batches / (time.perf_counter() - start))
    return {name: jitter(values) for name, values in rates.items()}


def olympic_mean(values) -> float:
    """The mean without the fastest and the slowest (MLPerf's; the plain mean below 3 values)."""
    values = sorted(values)
    return float(np.mean(values[1:-1] if len(values) >= 3 else values))


def time_stats(runs: list[dict]) -> dict:
    """Per-seed runs -> the median and olympic mean of the seeds that reached the target."""
    reached = [run for run in runs if run["epochs"] is not None]
    seconds = [run["seconds"] for run in reached]
    epochs = float(np.median([run["epochs"] for run in reached])) if reached else None
    return {
        "runs": runs,
        "reached": len(seconds),
        "seconds": float(np.median(seconds)) if seconds else None,
        "epochs": epochs,
        "median_seconds": float(np.median(seconds)) if seconds else None,
        "olympic_mean_seconds": olympic_mean(seconds) if seconds else None,
    }


def time_to_accuracy(target: float, config: Config, device: str | None, seeds: int) -> dict:
    """Ours, Keras fit as written and Keras fit at its best, seed by seed in turns, to `target`
    validation accuracy; the speed-ups are against each Keras side and the faster of the two."""
    from mlp_core.benchmark.variants import custom_time_to_accuracy, keras_time_to_accuracy

    runs: dict[str, list[dict]] = {"custom": [], "keras_fit": [], "keras_fit_best": []}
    for seed in range(seeds):
        seeded = dataclasses.replace(config, seed=seed)
        runs["custom"].append({"seed": seed, **custom_time_to_accuracy(target, seeded, device)})
        for name in ("keras_fit", "keras_fit_best"):
            timed = keras_time_to_accuracy(target, seeded, best=name == "keras_fit_best")
            runs[name].append({"seed": seed, **timed})
    stats = {name: time_stats(side) for name, side in runs.items()}
    medians = {name: side["median_seconds"] for name, side in stats.items()}
    reached = [name for name in ("keras_fit", "keras_fit_best") if medians[name]]
    baseline = min(reached, key=medians.__getitem__) if reached else None
    return {
        "target": target,
        "seeds": seeds,
        **stats,
        "keras_baseline": baseline,
        "speedup": _speedup(medians["keras_fit"], medians["custom"]),
        "speedup_vs_keras_best": _speedup(medians[baseline], medians["custom"])
        if baseline
        else None,
    }


def _speedup(theirs: float | None, ours: float | None) -> float | None:
    return theirs / ours if theirs and ours else None


def scaling(
    replicas: list[int], per_replica_batch: int, steps: int, rounds: int, train_subset: int = 0
) -> dict:
    """Examples/s of the mirrored plain step on 1, 2, ... replicas at a fixed per-replica batch,
    and the scaling efficiency: rate / (replicas x the 1-replica rate)."""
    rows = [_scaling_child(n, per_replica_batch, steps, rounds, train_subset) for n in replicas]
    base = rows[0]["examples_per_sec"] / rows[0]["replicas"]
    for row in rows:
        row["efficiency"] = row["examples_per_sec"] / (row["replicas"] * base)
    return {
        "per_replica_batch": per_replica_batch,
        "steps": steps,
        "rounds": rounds,
        "devices": "GPUs"
        if tf.config.list_physical_devices("GPU")
        else "logical CPUs (one physical CPU split: they share its cores)",
        "rows": rows,
    }


def _scaling_child(replicas: int, batch: int, steps: int, rounds: int, train_subset: int) -> dict:
    args = [
        sys.executable,
        "-m",
        "mlp_core.benchmark.modes",
        "--replicas",
        str(replicas),
        "--batch",
        str(batch),
        "--steps",
        str(steps),
        "--rounds",
        str(rounds),
        "--train-subset",
        str(train_subset),
    ]
    root = str(
        Path(__file__).resolve().parents[1]
    )  # this checkout's mlp_core, wherever we run from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise UserError(
            f"scaling run with {replicas} replicas failed: "
            f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def mirrored_rate(replicas: int, batch: int, steps: int, rounds: int, train_subset: int) -> dict:
    """In this (fresh) process: `replicas` mirrored replicas, timed over `rounds` of `steps` steps."""
    from mlp_core.benchmark.variants import REFERENCE, _stepper
    from mlp_core.training.checkpointing import train_batches
    from mlp_core.training.loop import build_context

    gpus = len(tf.config.list_physical_devices("GPU"))
    config = dataclasses.replace(
        REFERENCE,
        strategy="mirrored",
        batch_size=replicas * batch,
        logical_cpus=0 if gpus else replicas,
        train_subset=train_subset,
        logdir=tempfile.mkdtemp(prefix="bench-scaling-"),
        run_name="scaling",
    )
    ctx = build_context(config, None)
    run = _stepper(ctx.trainer, iter(train_batches(ctx, 0, 0)), 1, [])
    run(5)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(steps)
        rates.append(steps * config.batch_size / (time.perf_counter() - start))
    return {
        "replicas": replicas,
        "global_batch": config.batch_size,
        "examples_per_sec": float(np.median(rates)),
        **{"jitter": jitter(rates)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one scaling measurement (run by the benchmark)")
    for flag in ("--replicas", "--batch", "--steps", "--rounds", "--train-subset"):
        parser.add_argument(flag, type=int, required=flag != "--train-subset", default=0)
    args = parser.parse_args(argv)
    print(
        json.dumps(
            mirrored_rate(args.replicas, args.batch, args.steps, args.rounds, args.train_subset)
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
