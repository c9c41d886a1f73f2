"""Learning-rate schedules and optimizers, written out as tf.Modules.

All optimizer state (slots and the step counter) lives in tf.Variables created up front, so an
optimizer checkpoints with `tf.train.Checkpoint` and a compiled step that uses it never retraces.
The update rules follow `keras.optimizers` (tests compare them to 1e-6). Each is written out in
`_reference_update`, which is what the tests and the curious read; the step runs `_fused_update`, the
same rule as one of TensorFlow's fused training kernels (`tf.raw_ops.ResourceApply*`), which makes one
pass over the variable and its slots instead of one per elementwise op: on a small step the
separate passes cost nearly as much as the backward pass on a small step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import tensorflow as tf

# A gradient transformation: (gradients, variables) -> gradients, run before the update.
Transform = Callable[[list[tf.Tensor], Sequence[tf.Variable]], list[tf.Tensor]]


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

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        schedule,
        name: str,
        fused: bool = True,
        transforms: Sequence[Transform] = (),
    ):
        super().__init__(name=name)
        self.schedule, self.fused, self.transforms = schedule, fused, tuple(transforms)
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

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        """The loss to differentiate: the loss itself; a wrapper may hand back a multiple of it."""
        return loss

    @tf.Module.with_name_scope  # groups its ops in the Graphs dashboard
    def apply(
        self,
        grads: Sequence[tf.Tensor],
        variables: Sequence[tf.Variable],
        keep: tf.Tensor | None = None,
    ) -> None:
        """Transform the gradients, apply one update to every variable, advance the counter.

        Half-precision gradients go to the variables' float32 first, like the master weights.
        With `keep` False the update is masked: zero gradients at a zero rate, and every rule
        whose `masks_exactly` is True then leaves its variables and slots exactly as they were."""
        grads = [tf.cast(g, v.dtype) for g, v in zip(grads, variables)]
        for transform in self.transforms:
            grads = transform(grads, variables)
        lr = self.learning_rate
        if keep is not None:
            grads = [tf.where(keep, g, tf.zeros_like(g)) for g in grads]
            lr = tf.where(keep, lr, tf.zeros_like(lr))
        for i, (g, v) in enumerate(zip(grads, variables)):
            self._update(i, g, v, tf.cast(lr, v.dtype), keep)
        self.iterations.assign_add(1 if keep is None else tf.cast(keep, tf.int64))

    @property
    def masks_exactly(self) -> bool:
        """Whether a masked update (`keep` False) changes nothing at all."""
        return True

    def _update(self, i: int, g: tf.Tensor, v: tf.Variable, lr: tf.Tensor, keep=None) -> None:
        if self.fused:
            self._fused_update(i, g, v, lr, keep)
        else:
            self._reference_update(i, g, v, lr, keep)

    def _reference_update(self, i: int, g: tf.Tensor, v: tf.Variable, lr: tf.Tensor, keep) -> None:
        raise NotImplementedError

    def _fused_update(self, i: int, g: tf.Tensor, v: tf.Variable, lr: tf.Tensor, keep) -> None:
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
        transforms: Sequence[Transform] = (),
    ):
        self.slot_names = ("momentum",) if momentum > 0 else ()
        self.momentum = float(momentum)
        self.nesterov = nesterov
        super().__init__(variables, schedule, name, fused, transforms)

    @property
    def masks_exactly(self) -> bool:
        # With momentum the weights move by the momentum slot even at a zero rate.
        return not self.slot_names

    def _reference_update(self, i, g, v, lr, keep=None):
        if not self.slot_names:
            v.assign_sub(lr * g)
            return
        m = self.slots["momentum"][i]
        m.assign(self.momentum * m - lr * g)
        v.assign_add(self.momentum * m - lr * g if self.nesterov else m)

    def _fused_update(self, i, g, v, lr, keep=None):
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
        transforms: Sequence[Transform] = (),
    ):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        super().__init__(variables, schedule, name, fused, transforms)

    def _powers(self, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
        """beta_1^t and beta_2^t for this update's step t (counting from 1), for bias correction."""
        t = tf.cast(self.iterations + 1, dtype)
        return tf.pow(tf.cast(self.beta_1, dtype), t), tf.pow(tf.cast(self.beta_2, dtype), t)

    def _betas(self, dtype: tf.DType, keep) -> tuple[tf.Tensor, tf.Tensor]:
        """The moments' decay rates; 1 for a masked update, so the moments stay as they were."""
        betas = tf.constant([self.beta_1, self.beta_2], dtype)
        if keep is not None:
            betas = tf.where(keep, betas, tf.ones_like(betas))
        return betas[0], betas[1]

    def _reference_update(self, i, g, v, lr, keep=None):
        beta_1_t, beta_2_t = self._powers(v.dtype)
        beta_1, beta_2 = self._betas(v.dtype, keep)
        alpha = lr * tf.sqrt(1.0 - beta_2_t) / (1.0 - beta_1_t)
        m, s = self.slots["m"][i], self.slots["v"][i]
        m.assign_add((g - m) * (1.0 - beta_1))
        s.assign_add((tf.square(g) - s) * (1.0 - beta_2))
        v.assign_sub(alpha * m / (tf.sqrt(s) + self.epsilon))

    def _fused_update(self, i, g, v, lr, keep=None):
        beta_1_t, beta_2_t = self._powers(v.dtype)
        beta_1, beta_2 = self._betas(v.dtype, keep)
        tf.raw_ops.ResourceApplyAdam(
            var=v.handle,
            m=self.slots["m"][i].handle,
            v=self.slots["v"][i].handle,
            beta1_power=beta_1_t,
            beta2_power=beta_2_t,
            lr=lr,
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, v.dtype),
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

    def _update(self, i, g, v, lr, keep=None):
        if v.shape.rank >= 2 and self.weight_decay > 0:
            v.assign_sub(v * lr * self.weight_decay)
        super()._update(i, g, v, lr, keep)


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
    transforms: Sequence[Transform] = (),
) -> Optimizer:
    """The optimizer named by the config's `optimizer` field."""
    if name == "sgd":
        return SGD(variables, schedule, fused=fused, transforms=transforms)
    if name in ("momentum", "nesterov"):
        nesterov = name == "nesterov"
        return SGD(variables, schedule, momentum, nesterov, name, fused, transforms)
    if name == "adam":
        return Adam(variables, schedule, fused=fused, transforms=transforms)
    if name == "adamw":
        return AdamW(variables, schedule, weight_decay, fused=fused, transforms=transforms)
    raise ValueError(f"unknown optimizer {name!r}")


def half_squared_norms(grads: Sequence[tf.Tensor]) -> tf.Tensor:
    """sum(g**2) / 2 of each gradient, with TensorFlow's own L2Loss kernel."""
    return tf.stack([tf.nn.l2_loss(g) for g in grads])


class GradientNorms(tf.Module):
    """The gradients' norms (per variable, and global), recorded for the summaries.

    `norms` computes the per-variable half squares: `half_squared_norms`, or a form a compiler
    runs faster. Their sum is finite exactly when every gradient is (short of overflow), which
    makes it the cheap finiteness test the guard needs."""

    def __init__(
        self,
        count: int,
        norms: Callable[[Sequence[tf.Tensor]], tf.Tensor] = half_squared_norms,
    ):
        super().__init__(name="gradient_norms")
        self.norms = norms
        with self.name_scope:
            self.half_squares = tf.Variable(tf.zeros([count]), trainable=False, name="half_squares")

    def record(self, grads: Sequence[tf.Tensor]) -> tf.Tensor:
        """Store the half squares of `grads`; returns whether all of them are finite."""
        half_squares = self.norms(grads)
        self.half_squares.assign(half_squares)
        return tf.math.is_finite(tf.reduce_sum(half_squares))

    def global_norm(self) -> tf.Tensor:
        return tf.sqrt(2.0 * tf.reduce_sum(self.half_squares))


def clip_by_global_norm(max_norm: float) -> Transform:
    """Scale all gradients down together when their global norm exceeds `max_norm`."""

    def clip(grads: list[tf.Tensor], variables: Sequence[tf.Variable]) -> list[tf.Tensor]:
        return tf.clip_by_global_norm(grads, max_norm)[0]

    return clip


def add_l2(l2: float) -> Transform:
    """The gradient of an L2 penalty 0.5 * l2 * |W|^2 on the weight matrices (not the biases)."""

    def penalty(grads: list[tf.Tensor], variables: Sequence[tf.Variable]) -> list[tf.Tensor]:
        return [g + l2 * v if v.shape.rank >= 2 else g for g, v in zip(grads, variables)]

    return penalty


class OptimizerWrapper(tf.Module):
    """An optimizer around another: it passes everything on unless it overrides it."""

    def __init__(self, inner, name: str):
        super().__init__(name=name)
        self.inner = inner

    @property
    def iterations(self) -> tf.Variable:
        return self.inner.iterations

    @property
    def schedule(self):
        return self.inner.schedule

    @property
    def learning_rate(self) -> tf.Tensor:
        return self.inner.learning_rate

    @property
    def masks_exactly(self) -> bool:
        return self.inner.masks_exactly

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        return self.inner.scale_loss(loss)

    def apply(self, grads, variables, keep: tf.Tensor | None = None) -> None:
        self.inner.apply(grads, variables, keep)


class SkipNonFinite(OptimizerWrapper):
    """Applies an update only when every gradient is finite; otherwise leaves the weights, slots
    and counters as they were and raises `diverged`, which the loop checks before any save.
    It records the gradients' norms on the way, which is how it tells. `masked` chooses how it
    skips (see `apply_only_if`)."""

    def __init__(self, inner, norms: GradientNorms, masked: bool = False):
        super().__init__(inner, name="skip_non_finite")
        self.norms, self.masked = norms, masked
        self.diverged = tf.Variable(False, trainable=False, name="diverged")

    def apply(self, grads, variables, keep: tf.Tensor | None = None) -> None:
        grads = [tf.cast(g, v.dtype) for g, v in zip(grads, variables)]
        finite = self.norms.record(grads)
        condition = finite if keep is None else finite & keep
        apply_only_if(condition, self.inner, grads, variables, self.masked)
        self.diverged.assign(self.diverged | ~finite)


def apply_only_if(condition: tf.Tensor, optimizer, grads, variables, masked: bool) -> None:
    """`optimizer.apply(grads, variables)` when `condition` holds, else nothing.

    Two ways to skip: a conditional around the update, or (`masked`, where the optimizer's rules
    allow it) the update applied as a no-op. A compiled program pays for a conditional around
    in-place updates with a copy of every variable and slot; a graph pays for the masking's
    extra passes instead."""
    if masked and optimizer.masks_exactly:
        optimizer.apply(grads, variables, keep=condition)
        return

    def update() -> tf.Operation:
        optimizer.apply(grads, variables)
        return tf.no_op()

    tf.cond(condition, update, tf.no_op)
