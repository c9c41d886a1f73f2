"""Mixed precision: the dtype the layers compute in, how they compute it, and loss scaling.

A `Precision` is handed to the model (how a layer computes `activation(x @ kernel + bias)`) and
to the step (the dtype its inputs are cast to); float16 adds a loss-scaling optimizer wrapper.
Weights, optimizer slots and the update stay float32 in every policy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import tensorflow as tf

from mlp_core.core.model import Affine, affine
from mlp_core.core.optim import GradientNorms, OptimizerWrapper, apply_only_if
from mlp_core.fastpaths.choose import cpu_has_bf16

COMPUTE_DTYPES = {"float32": tf.float32, "mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}


@dataclass(frozen=True)
class Precision:
    """A resolved `--precision`: the compute dtype, the layers' arithmetic, loss scaling."""

    name: str
    compute_dtype: tf.DType
    affine: Affine
    loss_scaling: bool


def precision_policy(name: str) -> Precision:
    """The policy for `--precision` ("auto" has been resolved before; it means float32 here)."""
    name = "float32" if name == "auto" else name
    dtype = COMPUTE_DTYPES[name]
    through = dtype == tf.bfloat16 and bf16_products_in_float32()
    layer = affine_through_float32 if through else affine
    return Precision(name, dtype, layer, loss_scaling=name == "mixed_float16")


@functools.cache
def bf16_products_in_float32() -> bool:
    """Whether bfloat16 products run as float32 kernels here: on a CPU without bfloat16
    instructions and no GPU. TensorFlow's own bfloat16 kernels there are emulated, slower and
    less exact; the float32 kernels on the same bfloat16 values give what a bfloat16 product with
    float32 accumulation gives, up to the order of the sums."""
    return not cpu_has_bf16() and not tf.config.list_physical_devices("GPU")


def float32_product(
    a: tf.Tensor, b: tf.Tensor, transpose_a: bool = False, transpose_b: bool = False
) -> tf.Tensor:
    """The float32 product of (bfloat16) operands. The casts are differentiable, so gradients
    come back to the operands rounded to their dtype, as from a bfloat16 product."""
    return tf.matmul(
        tf.cast(a, tf.float32),
        tf.cast(b, tf.float32),
        transpose_a=transpose_a,
        transpose_b=transpose_b,
    )


def matmul(
    a: tf.Tensor,
    b: tf.Tensor,
    transpose_a: bool = False,
    transpose_b: bool = False,
    through_float32: bool | None = None,
) -> tf.Tensor:
    """`tf.matmul` as the layers multiply under the policy (the roofs time this): bfloat16
    through float32 kernels where that is faster (`through_float32`; None: decide here)."""
    if through_float32 is None:
        through_float32 = a.dtype == tf.bfloat16 and bf16_products_in_float32()
    if not through_float32:
        return tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    return tf.cast(float32_product(a, b, transpose_a, transpose_b), a.dtype)


def affine_through_float32(x, kernel, bias, activation) -> tf.Tensor:
    """A bfloat16 layer as float32 kernels: product, bias and activation in float32 on the
    bfloat16 values, the output rounded once, as a fused bfloat16 kernel (oneDNN's) computes."""
    outputs = float32_product(x, kernel) + tf.cast(bias, tf.float32)
    return tf.cast(activation(outputs), x.dtype)


class LossScaleOptimizer(OptimizerWrapper):
    """Dynamic loss scaling for float16, as an optimizer wrapper: the loss is multiplied by the
    scale before differentiation and the gradients divided by it; a step whose gradients overflow
    is skipped and halves the scale, `growth_interval` good steps double it. Only a non-finite
    loss itself counts as divergence."""

    def __init__(
        self,
        inner,
        norms: GradientNorms,
        masked: bool = False,
        initial: float = 2.0**15,
        growth_interval: int = 2000,
    ):
        super().__init__(inner, name="loss_scale")
        self.norms, self.masked, self.growth_interval = norms, masked, growth_interval
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        with self.name_scope:
            self.scale = tf.Variable(initial, trainable=False, name="scale", aggregation=first)
            self.good_steps = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="good_steps", aggregation=first
            )
            self.diverged = tf.Variable(False, trainable=False, name="diverged", aggregation=first)

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        self.diverged.assign(self.diverged | ~tf.math.is_finite(loss))
        return self.inner.scale_loss(loss) * tf.cast(self.scale, loss.dtype)

    def apply(self, grads, variables, keep: tf.Tensor | None = None) -> None:
        grads = [tf.cast(g, v.dtype) / self.scale for g, v in zip(grads, variables)]
        finite = self.norms.record(grads)
        condition = finite if keep is None else finite & keep
        apply_only_if(condition, self.inner, grads, variables, self.masked)
        self._update_scale(finite)

    def _update_scale(self, finite: tf.Tensor) -> None:
        grown = self.good_steps + 1 >= self.growth_interval
        self.scale.assign(
            tf.where(finite, tf.where(grown, self.scale * 2.0, self.scale), self.scale / 2.0)
        )
        self.scale.assign(tf.maximum(self.scale, 1.0))
        self.good_steps.assign(tf.where(finite & ~grown, self.good_steps + 1, 0))
