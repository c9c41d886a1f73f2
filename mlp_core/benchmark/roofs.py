"""The limits a training step is measured against: compute and memory roofs, and the roofline.

A roof is a rate the device reaches on the simplest work of its kind: matrix multiplies (FLOP/s,
per dtype, for one large square product and for the very shapes of the reference step) and memory
traffic (bytes/s, a large copy and an elementwise update, both far larger than any cache). The
roofline limit of a batch size is the examples/s a step would reach if it took only as long as the
slower of its matrix multiplies at the compute roof and its least memory traffic at the memory roof.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from mlp_core.config.config import Config
from mlp_core.core.pipeline import FEATURES
from mlp_core.fastpaths.precision import matmul

DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}
# The dtype a variant's matrix multiplies run in.
PRECISION_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
ADAM_SLOTS = 2


def layer_sizes(config: Config) -> list[int]:
    return [FEATURES, *config.hidden, 10]


def step_matmul_shapes(
    config: Config, batch: int
) -> list[tuple[tuple[int, int], tuple[int, int], bool, bool]]:
    """(a shape, b shape, transpose_a, transpose_b) of every matmul of one training step: each
    layer's forward product, its weight gradient (x^T dy), and its input gradient (dy W^T) except
    for the first layer, whose input (the pixels) needs none."""
    sizes, shapes = layer_sizes(config), []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        shapes += [
            ((batch, n_in), (n_in, n_out), False, False),
            ((batch, n_in), (batch, n_out), True, False),
        ]
        if i > 0:
            shapes.append(((batch, n_out), (n_in, n_out), False, True))
    return shapes


def matmul_flops(shapes) -> int:
    """2 m n k per product, m n k read off the shapes and transposes."""
    total = 0
    for a, b, ta, tb in shapes:
        m, k = (a[1], a[0]) if ta else a
        n = b[0] if tb else b[1]
        total += 2 * m * n * k
    return total


def parameter_count(config: Config) -> int:
    sizes = layer_sizes(config)
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def step_bytes(config: Config, batch: int, act_bytes: int = 4, slots: int = ADAM_SLOTS) -> dict:
    """The least memory traffic of one step, in bytes.

    Parameters (float32 master weights): the optimizer reads each weight, its slots and its
    gradient and writes the weight and its slots back. Per example: the uint8 pixels and float32
    one-hot label are read; every layer output is written forward and read backward, and so is
    its gradient (in the compute dtype, `act_bytes` each).
    """
    params = parameter_count(config) * 4 * (2 * (1 + slots) + 1)
    outputs = sum(layer_sizes(config)[1:])
    per_example = FEATURES + 10 * 4 + 4 * outputs * act_bytes
    return {"parameters": params, "per_example": per_example, "total": params + batch * per_example}


def roofline(
    config: Config, batch: int, flops_per_sec: float, bytes_per_sec: float, act_bytes: int = 4
) -> dict:
    """Examples/s bound by compute, by memory, and the lower of the two (the roofline limit)."""
    flops = matmul_flops(step_matmul_shapes(config, batch))
    compute_s, memory_s = (
        flops / flops_per_sec,
        step_bytes(config, batch, act_bytes)["total"] / bytes_per_sec,
    )
    return {
        "compute_bound_examples_per_sec": batch / compute_s,
        "memory_bound_examples_per_sec": batch / memory_s,
        "limit_examples_per_sec": batch / max(compute_s, memory_s),
        "bound": "compute" if compute_s >= memory_s else "memory",
    }


def serial_limit(config: Config, batch: int, matmul_seconds: float, bytes_per_sec: float) -> float:
    """Examples/s of a step made only of its products (taking `matmul_seconds`, as measured) and
    then the optimizer's pass over the parameters at the memory roof, one after the other.

    The roofline lets the two overlap fully; a step whose update waits for its gradients, as the
    reference step's does, overlaps them little, so this is the nearer limit for it: with these
    kernels, only a step that hides its update behind its products can beat it.
    """
    update = step_bytes(config, batch)["parameters"] / bytes_per_sec
    return batch / (matmul_seconds + update)


def jitter(values) -> dict:
    """Median, robust spread (1.4826 x median absolute deviation: the standard deviation for
    normal noise, unmoved by a few outliers), minimum and maximum."""
    values = np.asarray(values, dtype=np.float64)
    median = float(np.median(values))
    return {
        "median": median,
        "spread": float(1.4826 * np.median(np.abs(values - median))),
        "min": float(values.min()),
        "max": float(values.max()),
        "samples": values.tolist(),
    }


def _operands(shapes, dtype: tf.DType) -> list[tuple[tf.Tensor, tf.Tensor, bool, bool]]:
    seed = [0, 0]
    return [
        (
            tf.cast(tf.random.stateless_uniform(a, seed), dtype),
            tf.cast(tf.random.stateless_uniform(b, seed), dtype),
            ta,
            tb,
        )
        for a, b, ta, tb in shapes
    ]


def matmul_loop(shapes, dtype: tf.DType):
    """A compiled loop running all `shapes`' products n times; each product feeds a scalar carry,
    so none is pruned, and its inputs do not change, so it stays a pure matmul timing."""
    operands = _operands(shapes, dtype)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
    def run(n):
        carry = tf.zeros([], dtype)
        for _ in tf.range(n):
            carry += tf.add_n([matmul(a, b, ta, tb)[0, 0] for a, b, ta, tb in operands])
        return carry

    return run


def xla_matmul_loop(shapes, dtype: tf.DType):
    """`matmul_loop` compiled by XLA, for the matmuls an XLA step runs (XLA's own dot kernels).

    XLA would hoist a product of loop-invariant operands out of the loop and time nothing, so each
    iteration writes the last products' sum into one element of every left operand, in place: one
    element per operand per iteration, and the products stay inside the loop.
    """
    operands = _operands(shapes, dtype)

    def body(i, carry, *lefts):
        products = [matmul(a, b, ta, tb)[0, 0] for a, (_, b, ta, tb) in zip(lefts, operands)]
        carry = tf.add_n(products) * tf.constant(1e-9, dtype)
        lefts = [tf.tensor_scatter_nd_update(a, [[0, 0]], [a[0, 0] + carry]) for a in lefts]
        return (i + 1, carry, *lefts)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)], jit_compile=True)
    def run(n):
        start = (tf.constant(0), tf.zeros([], dtype), *[a for a, _, _, _ in operands])
        return tf.while_loop(lambda i, *_: i < n, body, start)[1]

    return run


def time_loop(run, repeats: int) -> float:
    """Seconds per iteration of a warmed-up compiled loop (`run(n)`)."""
    run(tf.constant(1)).numpy()
    start = time.perf_counter()
    run(tf.constant(repeats)).numpy()
    return (time.perf_counter() - start) / repeats


def best_seconds(run, repeats: int, rounds: int = 3) -> float:
    """The fastest of `rounds` timings: a roof is what the device reaches, not its average."""
    return min(time_loop(run, repeats) for _ in range(rounds))


def matmul_rates(
    config: Config,
    batch_sizes: list[int],
    dtype: str,
    device: str,
    square: int = 2048,
    flops: float = 1e10,
    xla: bool = False,
) -> dict:
    """FLOP/s of one large square product and of the reference step's products per batch size
    (each loop long enough for about `flops` FLOPs, so the clock's resolution does not matter);
    with `xla`, as XLA compiles them."""
    make_loop = xla_matmul_loop if xla else matmul_loop
    with tf.device(device):
        square = min(square, max(64, round((flops / 2) ** (1 / 3))))
        big = [((square, square), (square, square), False, False)]
        repeats = max(3, round(flops / matmul_flops(big)))
        rates: dict[str, float | dict[str, float]] = {
            "square": matmul_flops(big) / best_seconds(make_loop(big, DTYPES[dtype]), repeats)
        }
        for batch in batch_sizes:
            shapes = step_matmul_shapes(config, batch)
            repeats = max(3, round(flops / matmul_flops(shapes)))
            seconds = best_seconds(make_loop(shapes, DTYPES[dtype]), repeats)
            rates[str(batch)] = {
                "flops_per_sec": matmul_flops(shapes) / seconds,
                "seconds": seconds,
            }
    return rates


def memory_rates(device: str, megabytes: int = 256, repeats: int = 10) -> dict:
    """Bytes/s of a scaled copy y = c x (read one buffer, write another) and of an update y += x
    (read two, write one), on buffers far larger than the caches."""
    n = megabytes * 2**20 // 4
    with tf.device(device):
        src = tf.Variable(tf.ones([n]), trainable=False)
        dst = tf.Variable(tf.zeros([n]), trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
        def copy(k):
            for _ in tf.range(k):
                dst.assign(src * 1.5)
            return dst[0]

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
        def update(k):
            for _ in tf.range(k):
                dst.assign_add(src)
            return dst[0]

        return {
            "copy": 2 * 4 * n / best_seconds(copy, repeats),
            "update": 3 * 4 * n / best_seconds(update, repeats),
        }
