"""Learning-rate schedules and optimizers, written out as tf.Modules.

All optimizer state (slots and the step counter) lives in tf.Variables created up front, so an
optimizer checkpoints with `tf.train.Checkpoint` and a compiled step that uses it never retraces.
The update rules follow `keras.optimizers` (tests compare them to 1e-6).
"""
from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf


class Constant:
    """lr(step) = value."""

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        return tf.constant(self.value, tf.float32)


class WarmupCosine:
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to 0 at `total_steps`.

    Warm-up keeps Adam's first, badly-estimated updates small; cosine decay anneals at the end.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), self.warmup_steps + 1)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        cosine = 0.5 * self.peak * (1.0 + tf.cos(math.pi * tf.clip_by_value(progress, 0.0, 1.0)))
        return tf.where(step < self.warmup_steps, warm, cosine)


class Optimizer(tf.Module):
    """Shared machinery: a step counter, a schedule, one slot per variable per slot name."""

    slot_names: tuple[str, ...] = ()

    def __init__(self, variables: Sequence[tf.Variable], schedule, name: str):
        super().__init__(name=name)
        self.schedule = schedule
        with self.name_scope:
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
            self.slots = {
                slot: [tf.Variable(tf.zeros_like(v), trainable=False,
                                   name=f"{slot}/{v.name.split(':')[0]}") for v in variables]
                for slot in self.slot_names
            }

    @property
    def learning_rate(self) -> tf.Tensor:
        """The rate the next update will use."""
        return self.schedule(self.iterations)

    def apply(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Apply one update to every variable, then advance the step counter."""
        lr = self.learning_rate
        for i, (g, v) in enumerate(zip(grads, variables)):
            self._update(i, tf.cast(g, v.dtype), v, tf.cast(lr, v.dtype))
        self.iterations.assign_add(1)

    def _update(self, i: int, g: tf.Tensor, v: tf.Variable, lr: tf.Tensor) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Plain, heavy-ball (momentum) or Nesterov SGD, as Keras writes it:
    m <- momentum * m - lr * g;  v <- v + m  (Nesterov: v <- v + momentum * m - lr * g)."""

    def __init__(self, variables, schedule, momentum: float = 0.0, nesterov: bool = False,
                 name: str = "sgd"):
        self.slot_names = ("momentum",) if momentum > 0 else ()
        self.momentum = float(momentum)
        self.nesterov = nesterov
        super().__init__(variables, schedule, name)

    def _update(self, i, g, v, lr):
        if not self.slot_names:
            v.assign_sub(lr * g)
            return
        m = self.slots["momentum"][i]
        m.assign(self.momentum * m - lr * g)
        v.assign_add(self.momentum * m - lr * g if self.nesterov else m)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with Keras' epsilon placement: v -= alpha_t * m / (sqrt(v) + eps)."""

    slot_names = ("m", "v")

    def __init__(self, variables, schedule, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, name: str = "adam"):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        super().__init__(variables, schedule, name)

    def _update(self, i, g, v, lr):
        t = tf.cast(self.iterations + 1, v.dtype)
        alpha = lr * tf.sqrt(1.0 - tf.pow(tf.cast(self.beta_2, v.dtype), t)) / (
            1.0 - tf.pow(tf.cast(self.beta_1, v.dtype), t))
        m, s = self.slots["m"][i], self.slots["v"][i]
        m.assign_add((g - m) * (1.0 - self.beta_1))
        s.assign_add((tf.square(g) - s) * (1.0 - self.beta_2))
        v.assign_sub(alpha * m / (tf.sqrt(s) + self.epsilon))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): v -= lr * wd * v before the Adam
    step. Only matrices decay; biases do not, as is usual."""

    def __init__(self, variables, schedule, weight_decay: float = 1e-4, name: str = "adamw",
                 **adam_args):
        self.weight_decay = float(weight_decay)
        super().__init__(variables, schedule, name=name, **adam_args)

    def _update(self, i, g, v, lr):
        if v.shape.rank >= 2 and self.weight_decay > 0:
            v.assign_sub(v * lr * self.weight_decay)
        super()._update(i, g, v, lr)


def make_schedule(name: str, lr: float, warmup_steps: int, total_steps: int):
    """The schedule named by the config's `schedule` field."""
    if name == "constant":
        return Constant(lr)
    if name == "cosine":
        return WarmupCosine(lr, warmup_steps, total_steps)
    raise ValueError(f"unknown schedule {name!r}")


def make_optimizer(name: str, variables, schedule, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> Optimizer:
    """The optimizer named by the config's `optimizer` field."""
    if name == "sgd":
        return SGD(variables, schedule)
    if name in ("momentum", "nesterov"):
        return SGD(variables, schedule, momentum, nesterov=name == "nesterov", name=name)
    if name == "adam":
        return Adam(variables, schedule)
    if name == "adamw":
        return AdamW(variables, schedule, weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")
