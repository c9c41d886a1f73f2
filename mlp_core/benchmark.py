"""Training throughput of every fast path against Keras `model.fit`, and against the hardware limit.

Each variant builds the reference MLP (784-512-256-10, ReLU, Adam 1e-3, no dropout) and runs
warm-up steps (tracing, XLA compilation, caches). Then the variants are timed in turns, a few rounds
of many steps each, synchronizing (`.numpy()`) before reading the clock; each variant's median is
reported. Taking turns spreads the bursts of a shared machine's noise over all variants alike, and
Keras `fit`, the baseline, is timed both before and after them.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mlp_core import fastpaths
from mlp_core.config import Config
from mlp_core.data import Split
from mlp_core.errors import UserError
from mlp_core.hooks import Observer, RunContext
from mlp_core.loop import build_trainer, train_and_evaluate
from mlp_core.optim import warmup_steps
from mlp_core.pipeline import (FEATURES, default_device, flatten_and_one_hot, steps_per_epoch,
                               train_dataset)
from mlp_core.summaries import TensorBoardObserver

REFERENCE = Config(hidden=(512, 256), activation="relu", dropout=0.0, optimizer="adam", lr=1e-3,
                   schedule="constant", weight_decay=0.0, precision="float32", jit_compile=False,
                   steps_per_call=1, data_on_device=False, summaries=False)
BEST = dict(steps_per_call=16, data_on_device=True)
ROUNDS = 5
VARIANTS = {
    "plain": {}, "xla": dict(jit_compile=True), "steps_per_call": dict(steps_per_call=16),
    "data_on_device": dict(data_on_device=True), "best_float32": BEST,
    "best_xla": dict(BEST, jit_compile=True),
    "mixed_bfloat16": dict(BEST, precision="mixed_bfloat16"),
    "mixed_float16": dict(BEST, precision="mixed_float16"),
    # What train.py picks on the device (fastpaths.device_defaults), without and with summaries.
    "best": {}, "best_summaries": dict(summaries=True),
}


def training_flops(config: Config) -> int:
    """FLOPs of one example's matrix multiplies: forward, 2 per weight; backward, 2 per weight for
    the weight's gradient and 2 more for the layer input's, except the first layer's (the pixels
    need no gradient, and the step does not compute one)."""
    sizes = [FEATURES, *config.hidden, 10]
    weights = [a * b for a, b in zip(sizes, sizes[1:])]
    return 6 * sum(weights) - 2 * weights[0]


def matmul_rate(device: str, n: int = 2048, repeats: int = 20) -> float:
    """FLOP/s of a large float32 matrix multiply on `device`: the compute roof."""
    with tf.device(device):
        a = b = tf.random.stateless_uniform([n, n], seed=[0, 0])
        matmul = tf.function(lambda x, y: tf.matmul(x, y))
        matmul(a, b).numpy()
        start = time.perf_counter()
        for _ in range(repeats):
            c = matmul(a, b)
        c.numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def variant_config(name: str, batch_size: int, device: str | None) -> Config:
    """The reference config with variant `name`'s fast paths; "best*" start from the device's."""
    base = dataclasses.replace(REFERENCE, batch_size=batch_size)
    if name in ("best", "best_summaries"):
        base = dataclasses.replace(base, **fastpaths.device_defaults(device))
    return dataclasses.replace(base, **VARIANTS[name])


def warmed_up(config: Config, train: Split, device: str | None, warmup: int):
    """A function running n steps of our loop with `config`'s fast paths, already warmed up."""
    trainer = build_trainer(config, steps_per_epoch(train, config.batch_size), train, device)
    batches = None if config.data_on_device else iter(
        train_dataset(train, config.batch_size, config.seed, device))
    if trainer.device_data is not None:
        trainer.device_data.set_epoch(0)
    observers = _summary_observers(config, trainer, train, device)
    run = _stepper(trainer, batches, config.steps_per_call, observers)
    run(warmup)
    return run


def custom_rates(configs: dict[str, Config], train: Split, device: str | None, steps: int,
                 warmup: int, rounds: int = ROUNDS) -> dict[str, float]:
    """Median examples/s of each config over `rounds` turns of `steps` steps."""
    runs = {name: warmed_up(config, train, device, warmup) for name, config in configs.items()}
    rates = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(steps)  # ends synchronized
            rates[name].append(steps * configs[name].batch_size / (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in rates.items()}


def _stepper(trainer, batches, per_call: int, observers: list):
    """A function that runs n steps in calls of `per_call` and waits for the device at the end."""
    def run(n: int) -> None:
        done = int(trainer.global_step.numpy())
        for step in range(done, done + n, per_call):
            outputs = trainer.train_steps(batches, min(per_call, done + n - step))
            for observer, ctx in observers:
                observer.on_step_end(ctx, step + per_call, outputs)
        float(outputs["loss"].numpy())
    return run


def _summary_observers(config: Config, trainer, train: Split, device) -> list:
    if not config.summaries:
        return []
    ctx = RunContext(config, Path(tempfile.mkdtemp(prefix="bench-")), trainer, train, train, train,
                     steps_per_epoch(train, config.batch_size), device)
    observer = TensorBoardObserver(config.log_every, 0)
    observer.on_run_begin(ctx)
    return [(observer, ctx)]


def keras_model(config: Config) -> keras.Model:
    """The same MLP in Keras, compiled as `fit` users do (Keras picks its default jit_compile)."""
    model = keras.Sequential([keras.Input((FEATURES,))] +
                             [keras.layers.Dense(n, activation=config.activation) for n in config.hidden]
                             + [keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(config.lr), metrics=["accuracy"],
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return model


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch of a `fit` call."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - self.start]


def keras_epoch_rates(config: Config, train: Split, steps: int) -> list[float]:
    """Examples/s of each steady-state epoch of `model.fit` on normalized float32 arrays.

    fit runs whole epochs, as its users do: one to warm up, then enough to cover `steps` about
    `ROUNDS` / 2 times over (the benchmark calls this twice, before and after our variants).
    """
    keras.utils.set_random_seed(config.seed)
    images, labels = (t.numpy() for t in flatten_and_one_hot(train.images, train.labels))
    x, model, timer = images.astype(np.float32) / 255.0, keras_model(config), EpochTimer()
    epochs = 1 + max(ROUNDS // 2 + 1, round(ROUNDS * steps * config.batch_size / len(x) / 2))
    model.fit(x, labels, batch_size=config.batch_size, epochs=epochs, verbose=0, callbacks=[timer])
    return [len(x) / seconds for seconds in timer.seconds[1:]]


def variants_for(device: str | None) -> list[str]:
    """float16 only on a GPU (CPUs emulate it slowly); bfloat16 everywhere."""
    gpu = device is not None and "GPU" in device.upper()
    return [name for name in VARIANTS if name != "mixed_float16" or gpu]


def run_benchmark(train: Split, batch_sizes: list[int], device: str | None, steps: int,
                  warmup: int, variants: list[str] | None = None) -> dict:
    """Every variant at every batch size, with Keras fit and the compute-bound limit beside them."""
    tf.config.experimental.enable_op_determinism()
    roof = matmul_rate(device or "/CPU:0")
    results, limits, keras_epochs = [], {}, {}
    for batch in batch_sizes:
        base = dataclasses.replace(REFERENCE, batch_size=batch)
        limits[str(batch)] = roof / training_flops(base)
        configs = {name: variant_config(name, batch, device) for name in variants or variants_for(device)}
        # Keras before and after ours: a machine that drifts faster or slower affects both sides.
        before = keras_epoch_rates(base, train, steps)
        ours = custom_rates(configs, train, device, steps, warmup)
        keras_epochs[str(batch)] = before + keras_epoch_rates(base, train, steps)
        keras_eps = float(np.median(keras_epochs[str(batch)]))
        measured = {"keras_fit": keras_eps} | ours
        results += [{"variant": name, "batch_size": batch, "examples_per_sec": eps,
                     "vs_keras_fit": eps / keras_eps, "fraction_of_limit": eps / limits[str(batch)]}
                    for name, eps in measured.items()]
    return {"device": device_name(device), "tensorflow": tf.__version__, "keras": keras.__version__,
            "matmul_flops_per_sec": roof, "flops_per_example": training_flops(REFERENCE),
            "limit_examples_per_sec": limits, "limit_dtype": "float32", "steps": steps,
            "warmup_steps": warmup, "rounds": ROUNDS, "keras_fit_epochs": keras_epochs,
            "best": fastpaths.describe(variant_config("best", batch_sizes[0], device)),
            "results": results}


def device_name(device: str | None) -> str:
    """A human name: the GPU's model, or the CPU's."""
    if device and "GPU" in device.upper():
        gpu = tf.config.list_physical_devices("GPU")[0]
        return tf.config.experimental.get_device_details(gpu).get("device_name", device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({len(tf.config.list_physical_devices('CPU'))} device)"
    except OSError:
        pass
    return "CPU"


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
    config = dataclasses.replace(config, logdir=tempfile.mkdtemp(prefix="tta-"), run_name="custom",
                                 summaries=False)
    start = time.perf_counter()
    try:
        train_and_evaluate(config, device, observers=[stop])
    except ReachedTarget:
        pass
    return {"seconds": time.perf_counter() - start, "epochs": stop.epochs}


def keras_time_to_accuracy(target: float, config: Config) -> dict:
    """The same model, dropout, AdamW and warm-up + cosine schedule in Keras `fit`."""
    from mlp_core.loop import load_splits
    keras.utils.set_random_seed(config.seed)
    train, val, _ = load_splits(config)
    x, y = (t.numpy() for t in flatten_and_one_hot(train.images, train.labels))
    vx, vy = (t.numpy() for t in flatten_and_one_hot(val.images, val.labels))
    steps = steps_per_epoch(train, config.batch_size)
    warmup = warmup_steps(config.warmup_epochs, steps, config.epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps * config.epochs - warmup, warmup_target=config.lr, warmup_steps=warmup)
    layers = [keras.Input((FEATURES,))]
    for n in config.hidden:
        layers += [keras.layers.Dense(n, activation=config.activation), keras.layers.Dropout(config.dropout)]
    model = keras.Sequential(layers + [keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    reached = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(
        model, "stop_training", logs["val_accuracy"] >= target))
    start = time.perf_counter()
    history = model.fit(x.astype(np.float32) / 255.0, y, batch_size=config.batch_size,
                        epochs=config.epochs, validation_data=(vx.astype(np.float32) / 255.0, vy),
                        callbacks=[reached], verbose=0)
    epochs = len(history.history["val_accuracy"])
    hit = history.history["val_accuracy"][-1] >= target
    return {"seconds": time.perf_counter() - start, "epochs": epochs if hit else None}


def resolve_device(choice: str) -> str | None:
    """--device auto|cpu|gpu -> a device string (None: the host CPU)."""
    if choice == "cpu":
        return None
    if choice == "gpu" and not tf.config.list_logical_devices("GPU"):
        raise UserError("--device gpu: TensorFlow sees no GPU on this machine")
    return "/GPU:0" if choice == "gpu" else default_device()


def run_all(batch_sizes: list[int], device_choice: str, steps: int, warmup: int,
            train_subset: int = 0, target: float | None = None) -> dict:
    """The whole benchmark as scripts/benchmark.py runs it."""
    from mlp_core.loop import load_splits
    device = resolve_device(device_choice)
    train, _, _ = load_splits(dataclasses.replace(REFERENCE, train_subset=train_subset))
    report = run_benchmark(train, batch_sizes, device, steps, warmup)
    if target is not None:
        config = dataclasses.replace(Config(), train_subset=train_subset)
        ours, theirs = custom_time_to_accuracy(target, config, device), keras_time_to_accuracy(target, config)
        report["time_to_accuracy"] = {"target": target, "custom": ours, "keras_fit": theirs,
                                      "speedup": theirs["seconds"] / ours["seconds"]}
    return report


def table(report: dict) -> str:
    """The results as a fixed-width table."""
    lines = [f"{report['device']}; TensorFlow {report['tensorflow']}; matmul "
             f"{report['matmul_flops_per_sec'] / 1e9:.0f} GFLOP/s; {report['flops_per_example'] / 1e6:.2f} "
             "MFLOP per training example", f"best = {report['best']}",
             f"{'variant':<16}{'batch':>6}{'examples/s':>12}{'vs keras':>10}{'of limit':>10}"]
    lines += [f"{r['variant']:<16}{r['batch_size']:>6}{r['examples_per_sec']:>12,.0f}"
              f"{r['vs_keras_fit']:>9.2f}x{100 * r['fraction_of_limit']:>9.1f}%" for r in report["results"]]
    if "time_to_accuracy" in report:
        t = report["time_to_accuracy"]
        lines.append(f"time to {100 * t['target']:.1f} % validation accuracy: {t['custom']['seconds']:.1f} s "
                     f"(epoch {t['custom']['epochs']}) vs Keras fit {t['keras_fit']['seconds']:.1f} s "
                     f"(epoch {t['keras_fit']['epochs']}): {t['speedup']:.2f}x")
    return "\n".join(lines)


def save_plot(report: dict, path: str | Path) -> Path:
    """Bars of examples/s per variant, one group per batch size, the limit as a dashed line."""
    import matplotlib.pyplot as plt
    from mlp_core.figures import save_figure
    batches = sorted({r["batch_size"] for r in report["results"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in report["results"] if r["batch_size"] == batch]
        ax.barh([r["variant"] for r in rows], [r["examples_per_sec"] for r in rows],
                color=["gray" if r["variant"] == "keras_fit" else "tab:blue" for r in rows])
        ax.axvline(report["limit_examples_per_sec"][str(batch)], color="red", linestyle="--",
                   label="float32 compute-bound limit")
        ax.set(title=f"batch {batch}", xlabel="training examples/s")
        ax.xaxis.set_major_formatter(lambda value, _: f"{value / 1000:.0f}k")
        ax.invert_yaxis()
        ax.set_xlim(0, 1.5 * max(report["limit_examples_per_sec"][str(batch)],
                                 *(r["examples_per_sec"] for r in rows)))  # room for the legend
        ax.legend(loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)
