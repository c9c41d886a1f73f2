"""A run's trainer, assembled from the config: the plain step with what the run adds around it.

The core's `TrainStep` stays the same in every run. What changes is what it is handed (the
model's arithmetic for the precision, the loss, the optimizer and its wrappers) and what wraps it
(augmentation, the multi-step loops and XLA, or the replicas of a strategy). Build it inside
`strategy.scope()`, so every variable is mirrored on the strategy's replicas.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import tensorflow as tf

from mlp_core.config.config import Config
from mlp_core.core.data import Split
from mlp_core.core.model import MLP
from mlp_core.core.optim import (
    GradientNorms,
    SkipNonFinite,
    add_l2,
    clip_by_global_norm,
    half_squared_norms,
    make_optimizer,
    make_schedule,
    warmup_steps,
)
from mlp_core.core.step import EvalStep, RunningMetrics, TrainStep, make_loss, preprocess
from mlp_core.distribute.replicas import CrossReplicaMean, ReplicatedStep, cross_replica_sum
from mlp_core.fastpaths.choose import keep_freed_memory
from mlp_core.fastpaths.device_data import DeviceData
from mlp_core.fastpaths.loops import StepLoops, xla_half_squared_norms
from mlp_core.fastpaths.precision import LossScaleOptimizer, Precision, precision_policy
from mlp_core.recipe import augment
from mlp_core.recipe.balance import balanced_class_weights
from mlp_core.recipe.ema import WeightAverage, WithWeightAverage


def build_model(config: Config, precision: Precision | None = None) -> MLP:
    """The config's MLP; under a precision policy its layers compute the policy's way."""
    compute = (precision or precision_policy("float32")).affine
    return MLP(
        config.hidden,
        config.activation,
        config.dropout,
        config.initializer,
        config.seed,
        compute=compute,
    )


class Trainer:
    """The run's model, optimizer, metrics and compiled steps, and the ways to call them."""

    def __init__(self, config: Config, steps: int, train: Split | None, device: str | None):
        self.strategy = tf.distribute.get_strategy()
        self.distributed = tf.distribute.has_strategy()
        self.precision = precision_policy(config.precision)
        self.model = build_model(config, self.precision)
        # Built like the model, so the average starts at the initial weights.
        self.ema = (
            WeightAverage(build_model(config), config.ema_decay) if config.ema_decay else None
        )
        self.norms = GradientNorms(
            len(self.model.trainable_variables),
            xla_half_squared_norms if config.jit_compile else half_squared_norms,
        )
        self.optimizer = self._optimizer(config, steps)
        self.step = self._train_step(config, train)
        self.augment = augment.from_config(config)
        self.device_data = (
            DeviceData(_needed(train), config.batch_size, config.seed, device, _oversample(config))
            if config.data_on_device
            else None
        )
        self.runner = self._runner(bool(config.jit_compile))
        self.eval_step = EvalStep(self.eval_model, config.normalize)
        # With a weight average the last weights are validated too, so a run shows what it adds.
        self.eval_last_step = (
            EvalStep(self.model, config.normalize, "eval_last") if self.ema else None
        )

    def _optimizer(self, config: Config, steps: int):
        """The update rule with its gradient transformations, wrapped by the run's hooks."""
        warmup = warmup_steps(config.warmup_epochs, steps, config.epochs)
        transforms = [add_l2(config.l2)] if config.l2 else []
        if config.clip_norm:
            transforms.append(clip_by_global_norm(config.clip_norm))
        optimizer = make_optimizer(
            config.optimizer,
            self.model.trainable_variables,
            make_schedule(config.schedule, config.lr, warmup, steps * config.epochs),
            config.momentum,
            config.weight_decay,
            transforms=transforms,
        )
        if self.ema:
            optimizer = WithWeightAverage(optimizer, self.ema)
        guard = LossScaleOptimizer if self.precision.loss_scaling else SkipNonFinite
        # Under XLA a skipped update is a masked one: its conditional would copy every slot.
        self.guard = guard(optimizer, self.norms, masked=bool(config.jit_compile))
        return CrossReplicaMean(self.guard) if self.distributed else self.guard

    def _train_step(self, config: Config, train: Split | None) -> TrainStep:
        """The plain step, handed this run's loss, input dtype and metrics' reduction."""
        return TrainStep(
            self.model,
            self.optimizer,
            make_loss(config.label_smoothing, self._class_weights(config, train)),
            functools.partial(
                preprocess, normalize=config.normalize, dtype=self.precision.compute_dtype
            ),
            RunningMetrics("train_metrics", cross_replica_sum if self.distributed else tf.identity),
        )

    @staticmethod
    def _class_weights(config: Config, train: Split | None) -> tuple[float, ...]:
        if config.class_weights != "balanced":
            return ()
        return balanced_class_weights(_needed(train).labels)

    def _runner(self, jit: bool):
        step: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] = self.step
        if self.augment.active:
            step = augment.augmented(step, self.augment, self.global_step)
        if self.distributed:
            return ReplicatedStep(step, self.strategy)
        return StepLoops(step, self.global_step, self.device_data, jit)

    @property
    def global_step(self) -> tf.Variable:
        return self.step.steps

    @property
    def train_metrics(self) -> RunningMetrics:
        return self.step.metrics

    @property
    def eval_model(self) -> MLP:
        """What validation, test, export and analysis see: the weight average if there is one."""
        return self.ema.shadow if self.ema else self.model

    @property
    def diverged(self) -> tf.Variable:
        """Set once a step saw a non-finite update (which was not applied)."""
        return self.guard.diverged

    @property
    def train_step(self):
        """The compiled single step (for the Graphs dashboard and tests)."""
        return self.runner.single

    def train_steps(self, batches: Iterator | None, count: int) -> tf.Tensor:
        """Run `count` steps in one call; returns the last step's loss."""
        return self.runner(batches, count)

    def evaluate(self, dataset: tf.data.Dataset, last_weights: bool = False) -> dict[str, float]:
        """Loss and accuracy over one pass of `dataset`, of the evaluated model or, with
        `last_weights` and a weight average, of the trained weights."""
        step = self.eval_last_step if last_weights and self.eval_last_step else self.eval_step
        return step.evaluate(dataset)

    def weights_finite(self) -> bool:
        """False once a weight is inf or NaN (a finite update can still overflow a weight)."""
        return all(
            bool(tf.reduce_all(tf.math.is_finite(v))) for v in self.model.trainable_variables
        )


def _needed(train: Split | None) -> Split:
    """The training split, which balanced class weights and on-device data are built from."""
    if train is None:
        raise ValueError("balanced class weights and on-device data need the training split")
    return train


def _oversample(config: Config) -> bool:
    return config.balance == "oversample"


def build_trainer(
    config: Config, steps: int, train: Split | None = None, device: str | None = None
) -> Trainer:
    """The trainer for `config`, with `steps` training steps per epoch."""
    keep_freed_memory()  # process-wide, idempotent: the steps stop page-faulting
    return Trainer(config, steps, train, device)
