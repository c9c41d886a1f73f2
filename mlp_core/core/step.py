"""The plain train and eval steps: tape, loss, gradients, update, metrics. Traced once each.

Everything else a run may add (several steps per call, device-resident data, a compiler, mixed
precision, several devices, augmentation, a weight average) wraps these steps or is something they
are handed: the model, the optimizer (which may wrap another), the loss and the input transform. Running sums of loss and correct predictions live in variables updated inside the step,
so the loop reads them only when it wants to show them (one device sync per read, not per step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from mlp_core.core.data import NUM_CLASSES
from mlp_core.core.model import MLP
from mlp_core.core.optim import Optimizer, OptimizerWrapper
from mlp_core.core.pipeline import FEATURES

BATCH_SPEC = (
    tf.TensorSpec([None, FEATURES], tf.uint8, name="images"),
    tf.TensorSpec([None, NUM_CLASSES], tf.float32, name="labels"),
)
Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def cross_entropy(logits: tf.Tensor, one_hot: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
    one_hot = tf.cast(one_hot, logits.dtype)
    if label_smoothing > 0:
        one_hot = one_hot * (1.0 - label_smoothing) + label_smoothing / NUM_CLASSES
    return tf.nn.softmax_cross_entropy_with_logits(labels=one_hot, logits=logits)


def make_loss(label_smoothing: float = 0.0, class_weights: Sequence[float] = ()) -> Loss:
    """The training objective: the batch mean of the (smoothed, class-weighted) cross-entropy."""
    weights = tf.constant(class_weights, tf.float32) if class_weights else None

    def loss(logits: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        losses = cross_entropy(logits, one_hot, label_smoothing)
        if weights is not None:
            losses *= tf.linalg.matvec(one_hot, weights)
        return tf.reduce_mean(losses)

    return loss


def preprocess(
    images: tf.Tensor, normalize: bool = True, dtype: tf.DType = tf.float32
) -> tf.Tensor:
    """uint8 (or augmented float) pixels -> `dtype`, scaled to [0, 1] unless the normalization
    experiment turns it off. Scaled in float32 and rounded once, so every dtype sees the same
    values a float32 division gives."""
    pixels = tf.cast(images, tf.float32)
    return tf.cast(pixels / 255.0 if normalize else pixels, dtype)


class RunningMetrics(tf.Module):
    """Sums of loss, correct predictions and examples, kept on the device between reads.

    `reduce` combines a batch's sums before they are added: the identity on one device; a sum over
    the devices when each holds a slice of the batch (then every copy holds the whole sum).
    """

    def __init__(self, name: str, reduce: Callable[[tf.Tensor], tf.Tensor] = tf.identity):
        super().__init__(name=name)
        self.reduce = reduce
        with self.name_scope:
            self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
            self.correct = tf.Variable(0, dtype=tf.int64, trainable=False, name="correct")
            self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")

    @tf.Module.with_name_scope  # groups its ops in the Graphs dashboard
    def update(self, losses: tf.Tensor, logits: tf.Tensor, one_hot: tf.Tensor) -> None:
        """Add a batch's per-example losses and hits."""
        hits = tf.equal(tf.argmax(logits, axis=-1), tf.argmax(one_hot, axis=-1))
        sums = self.reduce(
            tf.stack(
                [
                    tf.reduce_sum(tf.cast(losses, tf.float64)),
                    tf.reduce_sum(tf.cast(hits, tf.float64)),
                    tf.cast(tf.size(hits), tf.float64),
                ]
            )
        )
        self.loss_sum.assign_add(sums[0])
        self.correct.assign_add(tf.cast(sums[1], tf.int64))
        self.count.assign_add(tf.cast(sums[2], tf.int64))

    def sums(self) -> tuple[float, int, int]:
        """(loss sum, correct, count) so far; reads the device."""
        return float(self.loss_sum.numpy()), int(self.correct.numpy()), int(self.count.numpy())

    def result(self) -> dict[str, float]:
        """Mean loss and accuracy so far (reads the device: call between steps, not inside)."""
        loss_sum, correct, count = self.sums()
        return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1)}

    def reset(self) -> None:
        for var in (self.loss_sum, self.correct, self.count):
            var.assign(tf.zeros_like(var))


class TrainStep(tf.Module):
    """One training step over a model, an optimizer, a loss and an input transform.

    `__call__` is the step as plain Python, which the loops and wrappers compile with a fixed
    input signature. `steps` counts steps taken, skipped updates included (the optimizer's
    `iterations` counts applied updates).
    """

    def __init__(
        self,
        model: MLP,
        optimizer: Optimizer | OptimizerWrapper,
        loss: Loss | None = None,
        inputs: Callable[[tf.Tensor], tf.Tensor] = preprocess,
        metrics: RunningMetrics | None = None,
    ):
        super().__init__(name="train_step")
        self.model, self.optimizer, self.inputs = model, optimizer, inputs
        self.loss = loss or make_loss()
        self.metrics = metrics or RunningMetrics("train_metrics")
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")

    def __call__(self, images: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        """Forward, loss, gradients, update, metrics; returns the batch's loss."""
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(self.inputs(images), training=True), tf.float32)
            loss = self.loss(logits, one_hot)
            scaled = self.optimizer.scale_loss(loss)  # the loss itself, unless a wrapper scales it
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        self.metrics.update(cross_entropy(logits, one_hot), logits, one_hot)
        self.steps.assign_add(1)
        return loss


class EvalStep(tf.Module):
    """Loss and accuracy of a model over a dataset, in float32 and without dropout."""

    def __init__(self, model: MLP, normalize: bool = True, name: str = "eval_step"):
        super().__init__(name=name)
        self.model, self.normalize = model, normalize
        self.metrics = RunningMetrics(f"{name}_metrics")
        self.compiled = tf.function(self.__call__, input_signature=BATCH_SPEC)

    def __call__(self, images: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        """Adds one batch to the metrics; returns its float32 logits."""
        logits = tf.cast(self.model(preprocess(images, self.normalize)), tf.float32)
        self.metrics.update(cross_entropy(logits, one_hot), logits, one_hot)
        return logits

    def evaluate(self, dataset: tf.data.Dataset) -> dict[str, float]:
        """Mean loss and accuracy over one pass of `dataset`."""
        self.metrics.reset()
        for images, one_hot in dataset:
            self.compiled(images, one_hot)
        return self.metrics.result()
