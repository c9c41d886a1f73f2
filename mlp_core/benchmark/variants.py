"""The variants the benchmark times and how each one runs: ours through the trainer, Keras's
through `model.fit` (as the notebook writes it, and at its best), and the runs to an accuracy.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mlp_core.config.config import Config
from mlp_core.core.data import Split
from mlp_core.core.optim import warmup_steps
from mlp_core.core.pipeline import (
    FEATURES,
    flatten_and_one_hot,
    steps_per_epoch,
    train_dataset,
)
from mlp_core.fastpaths import choose as fastpaths
from mlp_core.observers.base import Observer, RunContext
from mlp_core.observers.summaries import TensorBoardObserver
from mlp_core.training.loop import train_and_evaluate
from mlp_core.training.trainer import build_trainer

REFERENCE = Config(
    hidden=(512, 256),
    activation="relu",
    dropout=0.0,
    optimizer="adam",
    lr=1e-3,
    schedule="constant",
    weight_decay=0.0,
    precision="float32",
    jit_compile=False,
    steps_per_call=1,
    data_on_device=False,
    summaries=False,
)
BEST = dict(steps_per_call=16, data_on_device=True)
ROUNDS = 5
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "xla": dict(jit_compile=True),
    "steps_per_call": dict(steps_per_call=16),
    "data_on_device": dict(data_on_device=True),
    "best_float32": BEST,
    "best_xla": dict(BEST, jit_compile=True),
    "mixed_bfloat16": dict(BEST, precision="mixed_bfloat16"),
    "mixed_float16": dict(BEST, precision="mixed_float16"),
    # What train.py picks on the device (fastpaths.device_defaults), without and with summaries.
    "best": {},
    "best_summaries": dict(summaries=True),
}
# Keras `fit` as written (the notebook's way), and at its best: as many steps per call as our fast
# variants, compiled by XLA, fed uint8 pixels that the model scales. Every ratio is quoted against
# the faster of the two at the same batch size.
KERAS_ROWS = ("keras_fit", "keras_fit_best")
KERAS_BEST: dict[str, Any] = dict(
    steps_per_execution=BEST["steps_per_call"], jit_compile=True, inputs="uint8"
)


def training_flops(config: Config) -> int:
    """FLOPs of one example's matrix multiplies: forward, 2 per weight; backward, 2 per weight for
    the weight's gradient and 2 more for the layer input's, except the first layer's (the pixels
    need no gradient, and the step does not compute one)."""
    sizes = [FEATURES, *config.hidden, 10]
    weights = [a * b for a, b in zip(sizes, sizes[1:])]
    return 6 * sum(weights) - 2 * weights[0]


def variant_config(name: str, batch_size: int, device: str | None) -> Config:
    """The reference config with variant `name`'s fast paths; "best*" start from the device's."""
    base = dataclasses.replace(REFERENCE, batch_size=batch_size)
    if name in ("best", "best_summaries"):
        base = dataclasses.replace(base, **fastpaths.device_defaults(device))
    return dataclasses.replace(base, **VARIANTS[name])


def warmed_up(config: Config, train: Split, device: str | None, warmup: int):
    """A function running n steps of our loop with `config`'s fast paths, already warmed up."""
    trainer = build_trainer(config, steps_per_epoch(train, config.batch_size), train, device)
    batches = (
        None
        if config.data_on_device
        else iter(train_dataset(train, config.batch_size, config.seed, device))
    )
    if trainer.device_data is not None:
        trainer.device_data.set_epoch(0)
    observers = _summary_observers(config, trainer, train, device)
    run = _stepper(trainer, batches, config.steps_per_call, observers)
    run(warmup)
    return run


def custom_rates(
    configs: dict[str, Config],
    train: Split,
    device: str | None,
    steps: int,
    warmup: int,
    rounds: int = ROUNDS,
    profile: Path | None = None,
    extra: dict | None = None,
) -> dict[str, list[float]]:
    """Examples/s of each config in each of `rounds` turns of `steps` steps; `extra` rates
    (name -> a function measuring one) take their turns in the same rounds."""
    runs = {name: warmed_up(config, train, device, warmup) for name, config in configs.items()}
    rates: dict[str, list[float]] = {name: [] for name in [*runs, *(extra or {})]}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(steps)  # ends synchronized
            rates[name].append(steps * configs[name].batch_size / (time.perf_counter() - start))
        for name, measure in (extra or {}).items():
            rates[name].append(measure())
    if profile is not None:
        for name, run in runs.items():
            profiled_round(run, steps, profile / f"{name}-{configs[name].batch_size}")
    return rates


def profiled_round(run, steps: int, logdir: Path) -> None:
    """One more round, untimed, under tf.profiler with a step marker per call (TensorBoard's
    Profile tab reads `logdir`); untimed because tracing slows the step."""
    tf.profiler.experimental.start(str(logdir))
    try:
        run(steps, trace=True)
    finally:
        tf.profiler.experimental.stop()


def _stepper(trainer, batches, per_call: int, observers: list):
    """A function that runs n steps in calls of `per_call` and waits for the device at the end."""

    def run(n: int, trace: bool = False) -> None:
        done = int(trainer.global_step.numpy())
        for step in range(done, done + n, per_call):
            with (
                tf.profiler.experimental.Trace("train", step_num=step, _r=1)
                if trace
                else nullcontext()
            ):
                outputs = trainer.train_steps(batches, min(per_call, done + n - step))
            for observer, ctx in observers:
                observer.on_step_end(ctx, step + per_call, outputs)
        float(outputs.numpy())

    return run


def _summary_observers(config: Config, trainer, train: Split, device) -> list:
    if not config.summaries:
        return []
    ctx = RunContext(
        config,
        Path(tempfile.mkdtemp(prefix="bench-")),
        trainer,
        train,
        train,
        train,
        steps_per_epoch(train, config.batch_size),
        device,
    )
    observer = TensorBoardObserver(config.log_every, 0)
    observer.on_run_begin(ctx)
    return [(observer, ctx)]


def keras_model(config: Config, best: bool = False, optimizer=None) -> keras.Model:
    """The same MLP in Keras. As written (`best=False`), compiled as `fit` users do: Keras picks
    its default jit_compile, one step per call, on normalized float32 arrays. At its best, the
    steps per call of our fast variants (`steps_per_execution`), XLA, and the inputs of
    KERAS_BEST["inputs"]. `config.dropout` adds Dropout after each hidden layer."""
    uint8 = best and KERAS_BEST["inputs"] == "uint8"
    layers: list = [keras.Input((FEATURES,), dtype="uint8" if uint8 else "float32")]
    if uint8:  # the pixels reach the device as bytes; the model scales them
        layers.append(keras.layers.Rescaling(1 / 255))
    for n in config.hidden:
        layers.append(keras.layers.Dense(n, activation=config.activation))
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout))
    model = keras.Sequential(layers + [keras.layers.Dense(10)])
    fast = dict(
        steps_per_execution=KERAS_BEST["steps_per_execution"],
        jit_compile=KERAS_BEST["jit_compile"],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Model doesn't support `jit_compile=True`")
        model.compile(
            optimizer=keras.optimizers.Adam(config.lr) if optimizer is None else optimizer,
            metrics=["accuracy"],
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            **(fast if best else {}),
        )
    if best:
        # Keras turns XLA off whenever op determinism is on, as the benchmark runs (train.py's
        # setting); our XLA variants compile under it, so Keras at its best does too.
        model._jit_compile = KERAS_BEST["jit_compile"]
    return model


def keras_arrays(split: Split, best: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixels and one-hot labels as `fit` takes them: normalized float32, or at its best the
    inputs of KERAS_BEST["inputs"] (uint8 pixels, which the model scales)."""
    images, labels = (t.numpy() for t in flatten_and_one_hot(split.images, split.labels))
    if best and KERAS_BEST["inputs"] == "uint8":
        return images.astype(np.uint8), labels
    return images.astype(np.float32) / 255.0, labels


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch of a `fit` call (Keras reads the epoch's metrics back before
    on_epoch_end, so the device has finished the epoch's steps)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - self.start]


def keras_epoch_rates(
    config: Config, train: Split, steps: int, rounds: int = ROUNDS
) -> list[float]:
    """Examples/s of each steady-state epoch of `model.fit` as written (the `keras_fit` row).

    fit runs whole epochs, as its users do: one to warm up, then enough to cover `steps` about
    `rounds` / 2 times over (the benchmark calls this twice, before and after our variants).
    """
    keras.utils.set_random_seed(config.seed)
    (x, labels), model, timer = keras_arrays(train), keras_model(config), EpochTimer()
    epochs = 1 + max(rounds // 2 + 1, round(rounds * steps * config.batch_size / len(x) / 2))
    model.fit(x, labels, batch_size=config.batch_size, epochs=epochs, verbose=0, callbacks=[timer])
    return [len(x) / seconds for seconds in timer.seconds[1:]]


def keras_best_round(config: Config, train: Split, steps: int, warmup: int) -> Callable[[], float]:
    """A function timing one round of `fit` at its best (the `keras_fit_best` row), warmed up with
    `warmup` steps as our variants are: each round is one epoch of exactly `steps` batches, drawn
    from the training set, so that the round takes its turn among ours like theirs."""
    keras.utils.set_random_seed(config.seed)
    (x, labels), model, timer = (
        keras_arrays(train, best=True),
        keras_model(config, True),
        EpochTimer(),
    )
    order = np.random.default_rng(config.seed)

    def fit(n: int) -> float:
        pick = np.resize(order.permutation(len(x)), n * config.batch_size)
        model.fit(x[pick], labels[pick], batch_size=config.batch_size, verbose=0, callbacks=[timer])
        return n * config.batch_size / timer.seconds[-1]

    fit(warmup)
    return lambda: fit(steps)


class ReachedTarget(Exception):
    """Raised at the epoch end where validation accuracy first reaches the target."""


class StopAtAccuracy(Observer):
    def __init__(self, target: float):
        self.target, self.epochs = target, None

    def on_epoch_end(self, ctx, epoch, record) -> None:
        if record["val_accuracy"] >= self.target:
            self.epochs = epoch
            raise ReachedTarget


def custom_time_to_accuracy(target: float, config: Config, device: str | None) -> dict:
    """Wall seconds (data loading and tracing included) until validation accuracy >= target."""
    stop = StopAtAccuracy(target)
    config = dataclasses.replace(
        config, logdir=tempfile.mkdtemp(prefix="tta-"), run_name="custom", summaries=False
    )
    start = time.perf_counter()
    try:
        train_and_evaluate(config, device, observers=[stop])
    except ReachedTarget:
        pass
    return {"seconds": time.perf_counter() - start, "epochs": stop.epochs}


def keras_time_to_accuracy(target: float, config: Config, best: bool = False) -> dict:
    """The same model, dropout, AdamW and warm-up + cosine schedule in Keras `fit`, as written or
    (`best`) with the `keras_fit_best` row's steps per execution, XLA and inputs."""
    from mlp_core.training.loop import load_splits

    start = time.perf_counter()  # before the data is touched, as for ours
    keras.utils.set_random_seed(config.seed)
    train, val, _ = load_splits(config)
    (x, y), validation = keras_arrays(train, best), keras_arrays(val, best)
    steps = steps_per_epoch(train, config.batch_size)
    warmup = warmup_steps(config.warmup_epochs, steps, config.epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps * config.epochs - warmup, warmup_target=config.lr, warmup_steps=warmup
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    model = keras_model(config, best, optimizer)
    reached = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(
            model, "stop_training", logs["val_accuracy"] >= target
        )
    )
    history = model.fit(
        x,
        y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=validation,
        callbacks=[reached],
        verbose=0,
    )
    epochs = len(history.history["val_accuracy"])
    hit = history.history["val_accuracy"][-1] >= target
    return {"seconds": time.perf_counter() - start, "epochs": epochs if hit else None}
