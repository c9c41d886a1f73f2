"""Learning-rate schedules and optimizers, written out as tf.Modules.

All optimizer state (slots and the step counter) lives in tf.Variables created up front, so an
optimizer checkpoints with `tf.train.Checkpoint` and a compiled step that uses it never retraces.
The update rules follow `keras.optimizers` (tests compare them to 1e-6). Each is written out in
`_reference_update`, which is what the tests and the curious read; the step runs `_fused_update`, the
same rule as one of TensorFlow's fused training kernels (`tf.raw_ops.ResourceApply*`), which makes one
pass over the variable and its slots instead of one per elementwise op: on a small step the
separate passes cost nearly as much as the backward pass (docs/throughput.md has the figures).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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

    def __init__(self, variables: Sequence[tf.Variable], schedule, name: str, fused: bool = True):
        super().__init__(name=name)
        self.schedule, self.fused = schedule, fused
        with self.name_scope:
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
            self.slots = {
                slot: [
                    tf.Variable(
                        tf.zeros_like(v), trainable=False, name=f"{slot}/{v.name.split(':')[0]}"
                    )
                    for v in variables
                ]
                for slot in self.slot_names
            }

    @property
    def learning_rate(self) -> tf.Tensor:
        """The rate the next update will use."""
        return self.schedule(self.iterations)

    @tf.Module.with_name_scope  # groups its ops in the Graphs dashboard
    def apply(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Apply one update to every variable, then advance the step counter."""
        lr = self.learning_rate
        for i, (g, v) in enumerate(zip(grads, variables)):
            self._update(i, tf.cast(g, v.dtype), v, tf.cast(lr, v.dtype))
        self.iterations.assign_add(1)

    def _update(self, i: int, g: tf.Tensor, v: tf.Variable, lr: tf.Tensor) -> None:
        if self.fused:
            self._fused_update(i, g, v, lr)
        else:
            self._reference_update(i, g, v, lr)

    def _reference_update(self, i: int, g: tf.Tensor, v: tf.Variable, lr: tf.Tensor) -> None:
        raise NotImplementedError

    def _fused_update(self, i: int, g: tf.Tensor, v: tf.Variable, lr: tf.Tensor) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Plain, heavy-ball (momentum) or Nesterov SGD, as Keras writes it:
    m <- momentum * m - lr * g;  v <- v + m  (Nesterov: v <- v + momentum * m - lr * g)."""

    def __init__(
        self,
        variables,
        schedule,
        momentum: float = 0.0,
        nesterov: bool = False,
        name: str = "sgd",
        fused: bool = True,
    ):
        self.slot_names = ("momentum",) if momentum > 0 else ()
        self.momentum = float(momentum)
        self.nesterov = nesterov
        super().__init__(variables, schedule, name, fused)

    def _reference_update(self, i, g, v, lr):
        if not self.slot_names:
            v.assign_sub(lr * g)
            return
        m = self.slots["momentum"][i]
        m.assign(self.momentum * m - lr * g)
        v.assign_add(self.momentum * m - lr * g if self.nesterov else m)

    def _fused_update(self, i, g, v, lr):
        if not self.slot_names:
            tf.raw_ops.ResourceApplyGradientDescent(var=v.handle, alpha=lr, delta=g)
            return
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=v.handle,
            accum=self.slots["momentum"][i].handle,
            lr=lr,
            grad=g,
            momentum=tf.cast(self.momentum, v.dtype),
            use_nesterov=self.nesterov,
        )


class Adam(Optimizer):
    """Adam (Kingma & Ba) with Keras' epsilon placement: v -= alpha_t * m / (sqrt(v) + eps)."""

    slot_names = ("m", "v")

    def __init__(
        self,
        variables,
        schedule,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str = "adam",
        fused: bool = True,
    ):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        super().__init__(variables, schedule, name, fused)

    def _powers(self, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
        """beta_1^t and beta_2^t for this update's step t (counting from 1), for bias correction."""
        t = tf.cast(self.iterations + 1, dtype)
        return tf.pow(tf.cast(self.beta_1, dtype), t), tf.pow(tf.cast(self.beta_2, dtype), t)

    def _reference_update(self, i, g, v, lr):
        beta_1_t, beta_2_t = self._powers(v.dtype)
        alpha = lr * tf.sqrt(1.0 - beta_2_t) / (1.0 - beta_1_t)
        m, s = self.slots["m"][i], self.slots["v"][i]
        m.assign_add((g - m) * (1.0 - self.beta_1))
        s.assign_add((tf.square(g) - s) * (1.0 - self.beta_2))
        v.assign_sub(alpha * m / (tf.sqrt(s) + self.epsilon))

    def _fused_update(self, i, g, v, lr):
        beta_1_t, beta_2_t = self._powers(v.dtype)
        const = lambda x: tf.cast(x, v.dtype)  # noqa: E731
        tf.raw_ops.ResourceApplyAdam(
            var=v.handle,
            m=self.slots["m"][i].handle,
            v=self.slots["v"][i].handle,
            beta1_power=beta_1_t,
            beta2_power=beta_2_t,
            lr=lr,
            beta1=const(self.beta_1),
            beta2=const(self.beta_2),
            epsilon=const(self.epsilon),
            grad=g,
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): v -= lr * wd * v before the Adam
    step. Only matrices decay; biases do not, as is usual."""

    def __init__(
        self, variables, schedule, weight_decay: float = 1e-4, name: str = "adamw", **adam_args
    ):
        self.weight_decay = float(weight_decay)
        super().__init__(variables, schedule, name=name, **adam_args)

    def _update(self, i, g, v, lr):
        if v.shape.rank >= 2 and self.weight_decay > 0:
            v.assign_sub(v * lr * self.weight_decay)
        super()._update(i, g, v, lr)


MAX_WARMUP_FRACTION = 0.05  # the default run's 1 warm-up epoch of 20


def warmup_steps(warmup_epochs: float, steps_per_epoch: int, epochs: int) -> int:
    """Warm-up steps: `warmup_epochs`, but never more than 5 % of the run.

    Without the cap a run of one epoch would only ever ramp its rate up and never anneal. The cap
    equals the default's share (1 epoch of 20), so a default-length run keeps its schedule.
    """
    return round(min(warmup_epochs, MAX_WARMUP_FRACTION * epochs) * steps_per_epoch)


def make_schedule(name: str, lr: float, warmup_steps: int, total_steps: int):
    """The schedule named by the config's `schedule` field."""
    if name == "constant":
        return Constant(lr)
    if name == "cosine":
        return WarmupCosine(lr, warmup_steps, total_steps)
    raise ValueError(f"unknown schedule {name!r}")


def make_optimizer(
    name: str,
    variables,
    schedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    fused: bool = True,
) -> Optimizer:
    """The optimizer named by the config's `optimizer` field."""
    if name == "sgd":
        return SGD(variables, schedule, fused=fused)
    if name in ("momentum", "nesterov"):
        return SGD(
            variables, schedule, momentum, nesterov=name == "nesterov", name=name, fused=fused
        )
    if name == "adam":
        return Adam(variables, schedule, fused=fused)
    if name == "adamw":
        return AdamW(variables, schedule, weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}")
