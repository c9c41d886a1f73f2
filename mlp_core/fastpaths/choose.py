"""Which fast paths a run uses: the flags' explicit choices, else the fastest correct ones measured.

`None`, 0 and "auto" in the Config mean "pick for this device". The resolved values are what
config.json records, so a resumed run keeps them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

import tensorflow as tf

from mlp_core.config.config import Config
from mlp_core.core.errors import UserError

# Measured on the 2-core CPU with scripts/benchmark.py (see docs/throughput.md). The GPU choice is
# the usual one for an MLP this size and was NOT measured here (no GPU was available).
CPU_DEFAULTS: dict[str, Any] = dict(
    jit_compile=True, steps_per_call=16, data_on_device=True, precision="float32"
)
# CPUs with bfloat16 dot-product instructions multiply bfloat16 matrices faster than float32 ones
# (docs/benchmark.json has the figures); without them bfloat16 is emulated and slower (even with
# its layers as float32 kernels, precision.bf16_products_in_float32), so those keep float32. On the
# CPUs with them, XLA multiplies bfloat16 no faster than float32, while the graph's oneDNN kernels
# multiply it much faster (docs/benchmark.json), so bfloat16 keeps the graph loop.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_BF16_DEFAULTS: dict[str, Any] = {
    **CPU_DEFAULTS,
    "jit_compile": False,
    "precision": "mixed_bfloat16",
}
GPU_DEFAULTS: dict[str, Any] = dict(
    jit_compile=True, steps_per_call=16, data_on_device=True, precision="mixed_float16"
)
PLAIN: dict[str, Any] = dict(
    jit_compile=False, steps_per_call=1, data_on_device=False, precision="float32"
)


def resolve(config: Config, device: str | None) -> Config:
    """Fill in every automatic fast-path field for `device` (None: the host CPU).

    Under tf.distribute the plain step runs; explicit choices it cannot honour are an error.
    """
    defaults = device_defaults(device) if config.strategy == "default" else PLAIN
    if config.augment != "none" and not _is_gpu(device):
        # The distortions ran slower under XLA on the CPU (docs/best.md), so they keep the graph.
        defaults = {**defaults, "jit_compile": False}
    auto = {"jit_compile": None, "steps_per_call": 0, "data_on_device": None, "precision": "auto"}
    chosen = {
        key: defaults[key] if getattr(config, key) == empty else getattr(config, key)
        for key, empty in auto.items()
    }
    resolved = dataclasses.replace(config, **chosen)
    if resolved.strategy != "default" and any(getattr(resolved, k) != v for k, v in PLAIN.items()):
        raise UserError(
            f"the fast paths (--jit, --steps-per-call > 1, --data-on-device, --precision "
            f"mixed_*) work with --strategy default only, not {resolved.strategy}"
        )
    return resolved


def device_defaults(device: str | None) -> dict[str, Any]:
    """The measured CPU choice (bfloat16 where the CPU has it), or the GPU choice (float16 only
    with tensor cores)."""
    if not _is_gpu(device):
        return CPU_BF16_DEFAULTS if cpu_has_bf16() else CPU_DEFAULTS
    return GPU_DEFAULTS if _tensor_cores() else {**GPU_DEFAULTS, "precision": "float32"}


def _is_gpu(device: str | None) -> bool:
    return bool(device) and "GPU" in str(device).upper()


def set_threads(inter_op: int, intra_op: int) -> None:
    """Size TensorFlow's thread pools (0: its own choice): how many ops run at once, and how many
    threads one op (a matmul) splits over. Only before TensorFlow has set up its devices."""
    try:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError:
        raise UserError(
            "the thread pools can be sized only before TensorFlow sets up its devices"
        ) from None


def threading_settings() -> dict:
    """TensorFlow's thread pools as set in this process (0: TensorFlow's own choice)."""
    return {
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
    }


# glibc's mallopt parameters, and the values a training process wants (see keep_freed_memory).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
ALLOCATOR: dict[str, int] = {
    "mmap_threshold": 32 << 20,  # the largest glibc accepts on 64-bit systems
    "trim_threshold": 512 << 20,
    "top_pad": 64 << 20,
}
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> dict[str, int]:
    """Make glibc keep the memory a step frees, so the next step reuses it without page faults.

    TensorFlow's CPU tensors come from malloc. By default glibc serves large buffers with fresh
    mmaps and returns freed heap tops to the system, so every step touches new pages: up to
    hundreds of page faults per step, each costing microseconds in a VM.
    Raising the thresholds keeps the freed buffers in the heap: the process's resident memory stays
    near its peak instead of falling back between steps.
    Skipped off glibc and when the user sets glibc's own MALLOC_* variables. Returns what was set.
    """
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in _MALLOC_ENV):
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {}
    codes = {
        "mmap_threshold": _M_MMAP_THRESHOLD,
        "trim_threshold": _M_TRIM_THRESHOLD,
        "top_pad": _M_TOP_PAD,
    }
    return {name: value for name, value in ALLOCATOR.items() if mallopt(codes[name], value) == 1}


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels (matmuls among them) in this process: on by
    default only on CPUs with AVX-512 VNNI/BF16 or AMX, else when TF_ENABLE_ONEDNN_OPTS=1 was set
    before TensorFlow started. None where TensorFlow does not say."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def describe(config: Config) -> str:
    """One line for the console: which fast paths this run uses."""
    return (
        f"fast paths: XLA {'on' if config.jit_compile else 'off'}, "
        f"{config.steps_per_call} step{'s' if config.steps_per_call > 1 else ''} per call, "
        f"data {'on the device' if config.data_on_device else 'from tf.data'}, "
        f"{config.precision}"
    )


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the host CPU advertises bfloat16 instructions (Linux; elsewhere: False)."""
    try:
        flags = next(
            (line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")),
            "",
        ).split()
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def _tensor_cores() -> bool:
    """float16 pays off on GPUs with compute capability >= 7.0 (tensor cores)."""
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return details.get("compute_capability", (0, 0)) >= (7, 0)
