"""Training dynamics for TensorBoard: what practitioners read to tell a healthy run from a sick one.

Every `log_every` steps, per layer (kernel and bias as one vector): the gradient norm of the call's
last step (the terms the step computes for its global norm anyway), the weight norm, and the
update-to-weight ratio |W_after - W_before| / (count * |W_before|), from a copy of the weights made
before the call that crosses the logging step and the weights after it. The copy is made outside
the compiled step; with `count` steps per call the ratio is the norm of the call's net update per
step, equal to the single-step ratio when count == 1 and at most the mean single-step ratio when
count > 1 (the updates of consecutive steps add up without cancelling only if they all point the
same way). Each epoch, per hidden layer on the fixed validation batch (dropout off): the fraction
of dead units (never above 0) and the mean and standard deviation of the activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary

from mlp_core.core.model import MLP
from mlp_core.core.step import preprocess
from mlp_core.observers.base import Observer, RunContext

PREFIX = "dynamics"
PER_STEP = {
    "grad_norm": "gradient norm",
    "weight_norm": "weight norm",
    "update_ratio": "update-to-weight ratio",
}
PER_EPOCH = {
    "dead_fraction": "dead-unit fraction",
    "activation_mean": "activation mean",
    "activation_std": "activation standard deviation",
}


def layer_variables(model: MLP) -> list[tuple[str, list[int]]]:
    """Each layer's name and the positions of its kernel and bias in `model.trainable_variables`
    (the order of the step's gradients)."""
    position = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
    return [
        (layer.name, [position[layer.kernel.ref()], position[layer.bias.ref()]])
        for layer in model.layers
    ]


def grad_norms(model: MLP, l2_losses: tf.Tensor) -> dict[str, tf.Tensor]:
    """Per-layer gradient norms from the step's per-variable l2 losses (sum of squares / 2)."""
    return {
        name: tf.sqrt(2.0 * tf.reduce_sum(tf.gather(l2_losses, index)))
        for name, index in layer_variables(model)
    }


def _layer_norm(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors]))


def weight_norms(model: MLP) -> dict[str, tf.Tensor]:
    return {layer.name: _layer_norm([layer.kernel, layer.bias]) for layer in model.layers}


def snapshot(model: MLP) -> dict[str, list[tf.Tensor]]:
    """Copies of every layer's variables (an update after this does not change them)."""
    return {
        layer.name: [tf.identity(layer.kernel), tf.identity(layer.bias)] for layer in model.layers
    }


def update_ratios(
    model: MLP, before: dict[str, list[tf.Tensor]], count: int | tf.Tensor
) -> dict[str, tf.Tensor]:
    """|W_now - W_before| / (count * |W_before|) per layer: the update applied per step since
    `before` was taken `count` steps ago, relative to the weights it was applied to."""
    ratios = {}
    for layer in model.layers:
        old = before[layer.name]
        change = _layer_norm([layer.kernel - old[0], layer.bias - old[1]])
        ratios[layer.name] = change / (count * tf.maximum(_layer_norm(old), 1e-12))
    return ratios


def step_values(
    model: MLP, l2_losses: tf.Tensor, before: dict[str, list[tf.Tensor]], count: tf.Tensor
) -> dict[str, dict[str, tf.Tensor]]:
    """Every per-layer quantity logged every `log_every` steps."""
    return {
        "grad_norm": grad_norms(model, l2_losses),
        "weight_norm": weight_norms(model),
        "update_ratio": update_ratios(model, before, count),
    }


def unit_statistics(activations: Sequence[tf.Tensor]) -> dict[str, dict[str, tf.Tensor]]:
    """Per hidden layer ([batch, units] outputs): dead-unit fraction (units whose output is never
    above 0 on the batch: for ReLU, units that get no gradient) and the activations' mean and
    standard deviation."""
    stats = {}
    for i, a in enumerate(activations):
        dead = tf.reduce_max(a, axis=0) <= 0.0
        stats[f"hidden_{i}"] = {
            "dead_fraction": tf.reduce_mean(tf.cast(dead, tf.float32)),
            "activation_mean": tf.reduce_mean(a),
            "activation_std": tf.math.reduce_std(a),
        }
    return stats


def scalars_layout(hidden_layers: int) -> layout_pb2.Layout:
    """Custom Scalars: train and validation loss and accuracy in one chart each, then one chart per
    dynamics quantity with a line per layer (the regular expressions pick the tags)."""

    def chart(title: str, regex: str) -> layout_pb2.Chart:
        return layout_pb2.Chart(
            title=title, multiline=layout_pb2.MultilineChartContent(tag=[regex])
        )

    metrics = [
        chart(f"{key} (train, validation, test)", f"^{key}$") for key in ("loss", "accuracy")
    ]
    per_step = [chart(f"{title} per layer", f"^{PREFIX}/{key}/") for key, title in PER_STEP.items()]
    per_epoch = [
        chart(f"{title} per hidden layer", f"^{PREFIX}/{key}/") for key, title in PER_EPOCH.items()
    ]
    categories = [
        layout_pb2.Category(title="loss and accuracy", chart=metrics),
        layout_pb2.Category(title="training dynamics, every --log-every steps", chart=per_step),
    ]
    if hidden_layers:
        categories.append(layout_pb2.Category(title="hidden units, each epoch", chart=per_epoch))
    return layout_pb2.Layout(category=categories)


class DynamicsObserver(Observer):
    """Writes the dynamics through a TensorBoardObserver's writers (one event file per directory),
    at the same steps as its training scalars; `summaries` must come first in the observer list."""

    def __init__(self, summaries):
        self.summaries, self.before, self.measure = summaries, None, None

    def on_run_begin(self, ctx: RunContext) -> None:
        """The Custom Scalars layout (read from any run of the logdir) goes to the train run."""
        layout = custom_scalar_summary.pb(scalars_layout(len(ctx.trainer.model.layers) - 1))
        with self.summaries.writers["train"].as_default():
            tf.summary.experimental.write_raw_pb(layout.SerializeToString(), step=0)

    def on_call_begin(self, ctx: RunContext, step: int, count: int) -> None:
        every = self.summaries.log_every
        if every and (step + count) // every > step // every:
            self.before = (snapshot(ctx.trainer.model), count)

    def on_step_end(self, ctx: RunContext, step: int, loss: tf.Tensor) -> None:
        if self.before is None:
            return
        if self.measure is None:  # one compiled call instead of some forty eager ops per log
            self.measure = tf.function(partial(step_values, ctx.trainer.model))
        before, count = self.before
        half_squares = ctx.trainer.norms.half_squares  # of the call's last step
        values = self.measure(half_squares, before, tf.constant(count, tf.float32))
        self.before = None
        with self.summaries.writers["train"].as_default(step=step):
            for key, per_layer in values.items():
                for layer, value in per_layer.items():
                    tf.summary.scalar(f"{PREFIX}/{key}/{layer}", value)

    def on_epoch_end(self, ctx: RunContext, epoch: int, record: dict) -> None:
        images, _ = self.summaries.fixed
        x = preprocess(images, ctx.config.normalize)
        stats = unit_statistics(ctx.trainer.model.forward(x)[:-1])
        writer = self.summaries.writers["train"]
        with writer.as_default(step=epoch * ctx.steps_per_epoch):
            for layer, values in stats.items():
                for key, value in values.items():
                    tf.summary.scalar(f"{PREFIX}/{key}/{layer}", value)
        writer.flush()
