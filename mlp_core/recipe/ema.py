"""An exponential moving average of the weights (`--ema-decay`), the model that gets evaluated.

SGD's last iterate jitters around the minimum; the average of the recent iterates sits nearer its
centre, so it usually generalizes a little better for free (Polyak averaging, in its exponential
form). The average is a second MLP of the same shape, so evaluation, export and analysis use it
exactly as they would the trained model, and it checkpoints like any other module.
"""

from __future__ import annotations

import tensorflow as tf

from mlp_core.core.model import MLP
from mlp_core.core.optim import OptimizerWrapper


class WeightAverage(tf.Module):
    """shadow <- shadow - (1 - d_t) * (shadow - weights) after every applied update.

    d_t = min(decay, (1 + t) / (10 + t)) at update t, as `tf.train.ExponentialMovingAverage` does
    with `num_updates`: early on the average follows the weights closely instead of dragging the
    random initial values along, which matters in short runs.
    """

    def __init__(self, shadow: MLP, decay: float):
        super().__init__(name="ema")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.shadow, self.decay = shadow, float(decay)

    @tf.Module.with_name_scope  # groups its ops in the Graphs dashboard
    def update(
        self, variables: list[tf.Variable], updates: tf.Tensor, keep: tf.Tensor | None = None
    ) -> None:
        """Move the average towards `variables` (the model's, in the shadow's order) after
        `updates` applied optimizer updates (counting this one)."""
        t = tf.cast(updates, tf.float32)
        rate = 1.0 - tf.minimum(self.decay, (1.0 + t) / (10.0 + t))  # one rate for every weight
        for average, value in zip(self.shadow.trainable_variables, variables):
            step = (average - value) * tf.cast(rate, average.dtype)
            if keep is not None:  # a masked update: the average stays exactly where it is
                step = tf.where(keep, step, tf.zeros_like(step))
            average.assign_sub(step)


class WithWeightAverage(OptimizerWrapper):
    """An update hook: after every update the inner optimizer applies, the average follows."""

    def __init__(self, inner, average: WeightAverage):
        super().__init__(inner, name="with_weight_average")
        self.average = average

    def apply(self, grads, variables, keep: tf.Tensor | None = None) -> None:
        self.inner.apply(grads, variables, keep)
        self.average.update(list(variables), self.inner.iterations, keep)
