"""Training throughput of every fast path against Keras `model.fit`, and against the hardware limit.

Each variant builds the reference MLP (784-512-256-10, ReLU, Adam 1e-3, no dropout) and runs
warm-up steps (tracing, XLA compilation, caches). Then the variants are timed in turns, a few rounds
of many steps each, synchronizing (`.numpy()`) before reading the clock; each variant's median is
reported. Taking turns spreads the bursts of a shared machine's noise over all variants alike.
Keras `fit` runs twice: as written (whole epochs, timed before and after the rounds) and at its
best (our steps per call, XLA, uint8 inputs; one epoch per round, in turns with ours). Every
ratio is quoted against the faster of the two.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mlp_core.benchmark import roofs
from mlp_core.benchmark.modes import input_rates, scaling, time_to_accuracy
from mlp_core.benchmark.variants import (
    KERAS_BEST,
    KERAS_ROWS,
    REFERENCE,
    ROUNDS,
    VARIANTS,
    custom_rates,
    keras_best_round,
    keras_epoch_rates,
    training_flops,
    variant_config,
)
from mlp_core.config.config import Config
from mlp_core.core.data import Split
from mlp_core.core.errors import UserError
from mlp_core.core.pipeline import (
    default_device,
)
from mlp_core.fastpaths import choose as fastpaths


def variants_for(device: str | None) -> list[str]:
    """float16 only on a GPU (CPUs emulate it slowly); bfloat16 everywhere."""
    gpu = device is not None and "GPU" in device.upper()
    return [name for name in VARIANTS if name != "mixed_float16" or gpu]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one benchmark run measures (scripts/benchmark.py's flags)."""

    batch_sizes: tuple[int, ...] = (128, 512)
    steps: int = 600
    warmup: int = 50
    rounds: int = ROUNDS
    round_examples: int = 0  # > 0: each round runs about this many examples at every batch size
    variants: tuple[str, ...] = ()  # () = every variant of the device
    sweep_variants: tuple[str, ...] = ()  # at batch sizes outside full_at; () = `variants`
    full_at: tuple[int, ...] = (128, 512)
    input_batches: int = 200
    profile: Path | None = None
    scaling_batch: int = 128  # per replica
    roof_flops: float = 1e10  # FLOPs per roof timing (small in tests)
    roof_megabytes: int = 256  # buffer size of the memory roof (far beyond the caches)


def steps_for(plan: Plan, batch: int) -> int:
    """Steps per round: --steps, or enough for --round-examples, a multiple of 16 steps per call."""
    if not plan.round_examples:
        return plan.steps
    return max(16, -(-plan.round_examples // (16 * batch)) * 16)


def variants_at(plan: Plan, batch: int, device: str | None) -> list[str]:
    """All chosen variants at the detailed batch sizes, the sweep's few elsewhere. Both Keras rows
    run at every batch size (every ratio needs them), so naming them changes nothing."""
    names = list(plan.variants) or variants_for(device)
    if batch not in plan.full_at and plan.sweep_variants:
        names = list(plan.sweep_variants)
    unknown = sorted(set(names) - set(VARIANTS) - set(KERAS_ROWS))
    if unknown:
        raise UserError(
            f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}"
        )
    return [name for name in names if name not in KERAS_ROWS]


def measure_roofs(plan: Plan, device: str | None) -> dict:
    """Compute roofs per dtype, the memory roof, the step's bytes and the roofline per batch size."""
    target = device or "/CPU:0"
    dtypes = ["float32", "bfloat16"] + (["float16"] if "GPU" in target.upper() else [])
    batch_sizes = list(plan.batch_sizes)
    compute, compiled = (
        {
            dtype: roofs.matmul_rates(
                REFERENCE, batch_sizes, dtype, target, flops=plan.roof_flops, xla=xla
            )
            for dtype in dtypes
        }
        for xla in (False, True)
    )
    memory = roofs.memory_rates(target, plan.roof_megabytes)
    bandwidth = max(memory.values())
    line = {
        dtype: {
            str(b): roofs.roofline(
                REFERENCE, b, compute[dtype]["square"], bandwidth, roofs.DTYPES[dtype].size
            )
            for b in batch_sizes
        }
        for dtype in dtypes
    }
    return {
        "compute_flops_per_sec": compute,
        "compute_flops_per_sec_xla": compiled,
        "memory_bytes_per_sec": {**memory, "roof": bandwidth},
        "step_bytes": {str(b): roofs.step_bytes(REFERENCE, b) for b in batch_sizes},
        "roofline": line,
    }


def result_row(
    name: str,
    batch: int,
    samples: list[float],
    keras: dict[str, float],
    config: Config,
    limits: dict,
) -> dict:
    """One variant at one batch size: median and jitter, against Keras `fit` as written and against
    the faster Keras row (`keras` holds both rows' medians), the float32 compute limit, its own
    dtype's compute roof and the roofline, and its matmuls."""
    stats, dtype = roofs.jitter(samples), roofs.PRECISION_DTYPE[config.precision]
    eps, line = stats["median"], limits["roofline"][dtype][str(batch)]
    return {
        "variant": name,
        "batch_size": batch,
        "examples_per_sec": eps,
        "vs_keras_fit": eps / keras["keras_fit"],
        "vs_keras_best": eps / max(keras.values()),
        "fraction_of_limit": eps / limits["limit_examples_per_sec"][str(batch)],
        "dtype": dtype,
        "fraction_of_dtype_roof": eps / line["compute_bound_examples_per_sec"],
        "roofline_limit_examples_per_sec": line["limit_examples_per_sec"],
        "bound": line["bound"],
        "fraction_of_roofline": eps / line["limit_examples_per_sec"],
        **_matmul_fields(batch, eps, config, limits),
        "spread": stats["spread"],
        "min": stats["min"],
        "max": stats["max"],
        "rounds": stats["samples"],
    }


def _matmul_fields(batch: int, eps: float, config: Config, limits: dict) -> dict:
    """The step's matmul share, against the graph's kernels and against those of the variant's
    own compiler (XLA's for an XLA variant), and the serial limit of the latter."""
    dtype = roofs.PRECISION_DTYPE[config.precision]
    graph = limits["compute_flops_per_sec"][dtype][str(batch)]["seconds"]
    rates = limits["compute_flops_per_sec_xla" if config.jit_compile else "compute_flops_per_sec"]
    compiled = rates[dtype][str(batch)]["seconds"]
    serial = roofs.serial_limit(REFERENCE, batch, compiled, limits["memory_bytes_per_sec"]["roof"])
    compute_bound = limits["roofline"][dtype][str(batch)]["compute_bound_examples_per_sec"]
    return {
        "matmul_share": graph / (batch / eps),
        "matmul_share_as_compiled": compiled / (batch / eps),
        "serial_limit_examples_per_sec": serial,
        "serial_limit_of_dtype_roof": serial / compute_bound,
        "fraction_of_serial_limit": eps / serial,
    }


@dataclasses.dataclass
class BatchResult:
    """What one batch size measured: the rows, the epochs of Keras `fit` as written, the float32
    roof timed in the rounds, and the faster Keras row (the ratios' baseline)."""

    rows: list[dict]
    keras_fit_epochs: list[float]
    roof_in_turns: dict
    keras_baseline: str


def measure_batch(
    train: Split, batch: int, device: str | None, plan: Plan, limits: dict
) -> BatchResult:
    """Keras fit as written before and after our variants; Keras at its best and ours in turns."""
    configs = {
        name: variant_config(name, batch, device) for name in variants_at(plan, batch, device)
    }
    base, steps = dataclasses.replace(REFERENCE, batch_size=batch), steps_for(plan, batch)
    # Keras before and after ours: a machine that drifts faster or slower affects both sides.
    epochs = keras_epoch_rates(base, train, steps, plan.rounds)
    extra = {
        "keras_fit_best": keras_best_round(base, train, steps, plan.warmup),
        "roof": roof_in_turns(device, plan.roof_flops),
    }
    ours = custom_rates(
        configs, train, device, steps, plan.warmup, plan.rounds, plan.profile, extra
    )
    epochs += keras_epoch_rates(base, train, steps, plan.rounds)
    samples = {"keras_fit": epochs, "keras_fit_best": ours.pop("keras_fit_best")}
    keras_eps = {name: float(np.median(values)) for name, values in samples.items()}
    roof = roofs.jitter(ours.pop("roof"))
    configs |= {"keras_fit": base, "keras_fit_best": keras_best_config(base)}
    rows = [
        result_row(name, batch, values, keras_eps, configs[name], limits)
        for name, values in {**samples, **ours}.items()
    ]
    for row in rows:
        row["fraction_of_roof_in_turns"] = (
            row["examples_per_sec"] * training_flops(REFERENCE) / roof["median"]
        )
    return BatchResult(rows, epochs, roof, max(keras_eps, key=keras_eps.__getitem__))


def keras_best_config(base: Config) -> Config:
    """The reference config as Keras at its best runs it (for its row's XLA matmul fields)."""
    return dataclasses.replace(
        base,
        jit_compile=KERAS_BEST["jit_compile"],
        steps_per_call=KERAS_BEST["steps_per_execution"],
    )


def roof_in_turns(device: str | None, flops: float):
    """A function timing the float32 square matmul once: taking its turn among the variants, it
    gives a roof measured under the same load as they are (the machine may be shared)."""
    n = min(2048, max(64, round((flops / 2) ** (1 / 3))))
    big = [((n, n), (n, n), False, False)]
    with tf.device(device or "/CPU:0"):
        loop = roofs.matmul_loop(big, tf.float32)
    repeats = max(3, round(flops / roofs.matmul_flops(big)))
    return lambda: roofs.matmul_flops(big) / roofs.time_loop(loop, repeats)


def run_benchmark(train: Split, plan: Plan, device: str | None) -> dict:
    """Every variant at every batch size, with both Keras rows, the roofs and the input pipeline."""
    tf.config.experimental.enable_op_determinism()
    allocator = fastpaths.keep_freed_memory()  # before anything is timed: Keras and roofs too
    batches = list(plan.batch_sizes)
    limits = measure_roofs(plan, device)
    roof = limits["compute_flops_per_sec"]["float32"]["square"]
    limits["limit_examples_per_sec"] = {str(b): roof / training_flops(REFERENCE) for b in batches}
    measured = {str(b): measure_batch(train, b, device, plan, limits) for b in batches}
    results = [row for batch in measured.values() for row in batch.rows]
    inputs = {
        str(b): input_rates(train, b, device, plan.input_batches, plan.rounds) for b in batches
    }
    return {
        "device": device_name(device),
        "device_details": device_details(device),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "matmul_flops_per_sec": roof,
        "flops_per_example": training_flops(REFERENCE),
        "limit_examples_per_sec": limits.pop("limit_examples_per_sec"),
        "limit_dtype": "float32",
        "steps": plan.steps,
        "steps_per_round": {str(b): steps_for(plan, b) for b in batches},
        "warmup_steps": plan.warmup,
        "rounds": plan.rounds,
        "keras_fit_epochs": {b: m.keras_fit_epochs for b, m in measured.items()},
        "keras_fit_best": keras_best_description(),
        "keras_baseline": {b: m.keras_baseline for b, m in measured.items()},
        "best": fastpaths.describe(variant_config("best", batches[0], device)),
        "threading": fastpaths.threading_settings(),
        "allocator": allocator,
        "onednn": fastpaths.onednn_enabled(),
        **limits,
        "roof_in_turns_flops_per_sec": {b: m.roof_in_turns for b, m in measured.items()},
        "input_pipeline": inputs,
        "goals": goals(results),
        "results": results,
    }


def keras_best_description() -> dict:
    """What the `keras_fit_best` row's `fit` was given, as the report records it."""
    uint8 = KERAS_BEST["inputs"] == "uint8"
    return {
        "steps_per_execution": KERAS_BEST["steps_per_execution"],
        "jit_compile": KERAS_BEST["jit_compile"],
        "inputs": "uint8 pixels, Rescaling(1/255) in the model"
        if uint8
        else "float32 pixels scaled to [0, 1]",
    }


def goals(results: list[dict]) -> dict:
    """Per batch size, the best float32 variant: its fraction of the float32 roof and its ratios
    to Keras `fit` as written and to the faster Keras row."""
    out: dict[str, dict] = {}
    keys = (
        "variant",
        "examples_per_sec",
        "fraction_of_dtype_roof",
        "fraction_of_roof_in_turns",
        "vs_keras_fit",
        "vs_keras_best",
        "serial_limit_of_dtype_roof",
    )
    for row in results:
        if row["dtype"] == "float32" and row["variant"] not in KERAS_ROWS:
            best = out.get(str(row["batch_size"]))
            if best is None or row["examples_per_sec"] > best["examples_per_sec"]:
                out[str(row["batch_size"])] = {k: row[k] for k in keys}
    return out


def device_details(device: str | None) -> dict:
    """The GPU the run used (its name and compute capability; None on a CPU), and the CUDA and
    cuDNN versions this TensorFlow was built with (None for a build without CUDA)."""
    build = tf.sysconfig.get_build_info()
    details = {
        "gpu": None,
        "compute_capability": None,
        "cuda_build_version": build.get("cuda_version"),
        "cudnn_build_version": build.get("cudnn_version"),
    }
    if device and "GPU" in device.upper():
        index = int(device.rsplit(":", 1)[-1]) if ":" in device else 0
        gpu = tf.config.list_physical_devices("GPU")[index]
        info = tf.config.experimental.get_device_details(gpu)
        capability = info.get("compute_capability")
        details["gpu"] = info.get("device_name") or gpu.name
        details["compute_capability"] = ".".join(map(str, capability)) if capability else None
    return details


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


def resolve_device(choice: str) -> str | None:
    """--device auto|cpu|gpu -> a device string (None: the host CPU)."""
    if choice == "cpu":
        return None
    if choice == "gpu" and not tf.config.list_logical_devices("GPU"):
        raise UserError("--device gpu: TensorFlow sees no GPU on this machine")
    return "/GPU:0" if choice == "gpu" else default_device()


def run_all(
    plan: Plan,
    device_choice: str,
    train_subset: int = 0,
    target: float | None = None,
    seeds: int = 1,
    strategy: str = "default",
    logical_cpus: int = 0,
    threads: tuple[int, int] | None = None,
) -> dict:
    """The whole benchmark as scripts/benchmark.py runs it."""
    from mlp_core.training.loop import load_splits

    if threads is not None:
        fastpaths.set_threads(*threads)
    device = resolve_device(device_choice)
    for batch in plan.batch_sizes:
        variants_at(plan, batch, device)  # unknown names fail before anything is timed
    train, _, _ = load_splits(
        dataclasses.replace(REFERENCE, train_subset=train_subset, batch_size=max(plan.batch_sizes))
    )
    report = run_benchmark(train, plan, device)
    if strategy == "mirrored":
        replicas = list(
            range(1, max(logical_cpus, len(tf.config.list_physical_devices("GPU")), 1) + 1)
        )
        report["scaling"] = scaling(
            replicas,
            plan.scaling_batch,
            steps_for(plan, plan.scaling_batch),
            plan.rounds,
            train_subset,
        )
    if target is not None:
        config = dataclasses.replace(Config(), train_subset=train_subset)
        report["time_to_accuracy"] = time_to_accuracy(target, config, device, seeds)
    return report
