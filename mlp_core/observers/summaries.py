"""TensorBoard summaries of a run, written between compiled steps so they never slow the step itself.

Layout: `<run>/train`, `<run>/validation` and `<run>/test` share tag names (`loss`, `accuracy`), so
TensorBoard overlays their curves; the run directory itself holds the config text and HParams.
Per-step work is one modulo test; every `log_every` steps the observer reads the step's outputs
(one device sync). Histograms and images are made at epoch ends, from a fixed validation batch
and the whole validation set.
"""

from __future__ import annotations

import json
import time

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from mlp_core.config.config import Config
from mlp_core.core.pipeline import flatten_and_one_hot
from mlp_core.core.step import cross_entropy, preprocess
from mlp_core.evaluation.figures import confusion_figure, digit_grid, figure_to_png
from mlp_core.evaluation.predictions import confusion_matrix, mistake_titles, predict_probabilities
from mlp_core.observers.base import Observer, RunContext
from mlp_core.observers.graphs import write_step_graphs
from mlp_core.observers.pr_curves import write_pr_curves

FIXED_BATCH = 500
GRID = 25
METRICS = [
    hp.Metric("accuracy", group=group, display_name=f"{group} accuracy")
    for group in ("validation", "test")
] + [
    hp.Metric("loss", group=group, display_name=f"{group} loss") for group in ("validation", "test")
]


class TensorBoardObserver(Observer):
    """Scalars every `log_every` steps; histograms every `histogram_every` epochs; images each epoch."""

    def __init__(self, log_every: int = 100, histogram_every: int = 1, experiment: bool = True):
        self.log_every, self.histogram_every = log_every, histogram_every
        self.experiment = experiment  # False: a sweep's root holds the one HParams config

    def on_run_begin(self, ctx: RunContext) -> None:
        self.writers = {
            name: tf.summary.create_file_writer(str(ctx.run_dir / name))
            for name in ("train", "validation", "test")
        }
        self.monitor = ctx.val if len(ctx.val) else ctx.test
        self.fixed = flatten_and_one_hot(
            self.monitor.images[:FIXED_BATCH], self.monitor.labels[:FIXED_BATCH]
        )
        self.last_step = int(ctx.trainer.global_step.numpy())
        self.logged_sums = ctx.trainer.train_metrics.sums()  # train means run from here
        self.rate_from = (time.perf_counter(), self.last_step)  # examples/s is measured from here
        with tf.summary.create_file_writer(str(ctx.run_dir)).as_default(step=0):
            write_run_description(ctx.config, self.experiment)
        with self.writers["train"].as_default(step=0):
            titles = [str(label) for label in ctx.train.labels[:GRID]]
            tf.summary.image("sample_inputs", png(digit_grid(ctx.train.images[:GRID], titles)))
        write_step_graphs(ctx.trainer, self.writers)

    def on_step_end(self, ctx: RunContext, step: int, loss: tf.Tensor) -> None:
        if not self.log_every or step // self.log_every == self.last_step // self.log_every:
            return  # with several steps per call, log once a multiple of log_every is passed
        now, (since, from_step) = time.perf_counter(), self.rate_from
        rate = (step - from_step) * ctx.config.batch_size / max(now - since, 1e-9)
        self.rate_from, self.last_step = (now, step), step
        trainer = ctx.trainer
        with self.writers["train"].as_default(step=step):
            for key, value in self.train_means(trainer.train_metrics.sums()).items():
                tf.summary.scalar(key, value)  # the quantities validation and test log too
            if objective_differs(ctx.config):
                tf.summary.scalar("objective", loss)  # what the step minimized, last step
            tf.summary.scalar("grad_norm", trainer.norms.global_norm())
            # The rate the last update applied (updates, not steps, drive the schedule).
            tf.summary.scalar(
                "learning_rate", trainer.optimizer.schedule(trainer.optimizer.iterations - 1)
            )
            tf.summary.scalar("examples_per_sec", rate)

    def train_means(self, sums: tuple[float, int, int]) -> dict[str, float]:
        """Mean cross-entropy and accuracy of the training batches since the last log point, or
        since the epoch's start (the loop resets the sums then)."""
        before, self.logged_sums = self.logged_sums, sums
        count = max(sums[2] - before[2], 1)
        return {"loss": (sums[0] - before[0]) / count, "accuracy": (sums[1] - before[1]) / count}

    def on_epoch_end(self, ctx: RunContext, epoch: int, record: dict) -> None:
        self.logged_sums = (0.0, 0, 0)  # the loop resets the train sums as the next epoch starts
        step = epoch * ctx.steps_per_epoch
        with self.writers["validation"].as_default(step=step):
            # last_*: the trained weights, when the run evaluates a weight average instead.
            for key in ("loss", "accuracy", "last_loss", "last_accuracy"):
                if f"val_{key}" in record:
                    tf.summary.scalar(key, record[f"val_{key}"])
            probabilities = predict_probabilities(
                ctx.trainer.eval_model, self.monitor.images, ctx.config.normalize
            )
            self._images(probabilities.argmax(1))
            write_pr_curves(self.monitor.labels, probabilities, step)
        with self.writers["train"].as_default(step=step):
            write_augmented_inputs(ctx, step)
        if self.histogram_every and epoch % self.histogram_every == 0:
            with self.writers["train"].as_default(step=step):
                self._histograms(ctx)
        for writer in self.writers.values():
            writer.flush()
        self.rate_from = (time.perf_counter(), step)  # validation and summaries are not training

    def on_run_end(self, ctx: RunContext, metrics: dict) -> None:
        with self.writers["test"].as_default(step=ctx.config.epochs * ctx.steps_per_epoch):
            tf.summary.scalar("loss", metrics["test_loss"])
            tf.summary.scalar("accuracy", metrics["test_accuracy"])
        for writer in self.writers.values():
            writer.close()

    def _images(self, predicted: np.ndarray) -> None:
        """The first misclassified monitoring digits and the confusion matrix, as of this epoch."""
        split = self.monitor
        wrong = np.flatnonzero(predicted != split.labels)[:GRID]
        if len(wrong):
            grid = digit_grid(split.images[wrong], mistake_titles(split, predicted, wrong))
            tf.summary.image("misclassified", png(grid))
        counts = confusion_matrix(split.labels, predicted)
        tf.summary.image("confusion_matrix", png(confusion_figure(counts)))

    def _histograms(self, ctx: RunContext) -> None:
        """Weights and biases, their gradients on the fixed batch, and each hidden layer's output."""
        model, (images, one_hot) = ctx.trainer.model, self.fixed
        x = preprocess(images, ctx.config.normalize)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(cross_entropy(model(x), one_hot))
        grads = tape.gradient(loss, model.trainable_variables)
        for var, grad in zip(model.trainable_variables, grads):
            name = var.name.split(":")[0]
            tf.summary.histogram(f"weights/{name}", var)
            tf.summary.histogram(f"gradients/{name}", grad)
        for i, activation in enumerate(model.forward(x)[:-1]):
            tf.summary.histogram(f"activations/hidden_{i}", activation)


def write_augmented_inputs(ctx: RunContext, step: int) -> None:
    """The first training digits as the augmentation distorts them at `step`: the same digits at
    every epoch end, so TensorBoard's step slider shows the distortions change. Nothing without
    augmentation."""
    augment = ctx.trainer.augment
    if not augment.active:
        return
    images = ctx.train.images[:GRID]
    warped = augment(tf.constant(images.reshape(len(images), -1)), tf.constant(step, tf.int64))
    pixels = np.clip(np.round(warped.numpy()), 0, 255).astype(np.uint8).reshape(images.shape)
    titles = [str(label) for label in ctx.train.labels[:GRID]]
    tf.summary.image("augmented_inputs", png(digit_grid(pixels, titles)))


def objective_differs(config: Config) -> bool:
    """Whether the step minimizes something other than the plain mean cross-entropy."""
    return bool(config.label_smoothing or config.class_weights != "none")


def png(figure) -> tf.Tensor:
    """A matplotlib figure as a [1, H, W, 4] uint8 image for tf.summary.image."""
    return tf.image.decode_png(figure_to_png(figure))[tf.newaxis]


def write_run_description(config: Config, experiment: bool = True) -> None:
    """The config as text (Text dashboard) and as HParams (one row per run in the HParams table).

    `experiment=False` leaves out the HParams config (the table's columns and domains): the
    dashboard shows one such config per logdir, picked arbitrarily among the runs that have one, so
    inside a sweep only the sweep's root writes it, with the searched domains.
    """
    tf.summary.text("config", f"```\n{json.dumps(config.to_dict(), indent=2, sort_keys=True)}\n```")
    values = hparam_values(config)
    if experiment:
        hp.hparams_config(hparams=[hp.HParam(key) for key in sorted(values)], metrics=METRICS)
    hp.hparams(values, trial_id=config.run_name)


def hparam_values(config: Config) -> dict[str, bool | int | float | str]:
    """The config as HParams values: what TensorBoard stores as-is, the rest (tuples) as text."""
    return {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in config.to_dict().items()
        if key not in ("logdir", "run_name")
    }
