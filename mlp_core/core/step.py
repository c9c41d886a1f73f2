"""The compiled train and eval steps: only tensor ops inside, traced exactly once per run.

Running sums of loss and correct predictions live in variables updated inside the step, so the
loop reads them only when it wants to show them (one device sync per read, not one per step).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from mlp_core.core.data import NUM_CLASSES
from mlp_core.core.model import MLP, bf16_products_in_float32
from mlp_core.core.optim import Optimizer
from mlp_core.core.pipeline import FEATURES, DeviceData
from mlp_core.recipe.augment import Augmentation
from mlp_core.recipe.ema import WeightAverage

BATCH_SPEC = (
    tf.TensorSpec([None, FEATURES], tf.uint8, name="images"),
    tf.TensorSpec([None, NUM_CLASSES], tf.float32, name="labels"),
)


@dataclass(frozen=True)
class LossConfig:
    """What the step needs to know besides the model and optimizer."""

    normalize: bool = True
    label_smoothing: float = 0.0
    l2: float = 0.0
    clip_norm: float = 0.0
    precision: str = "float32"
    class_weights: tuple[float, ...] = ()  # per-class loss weights for training; () = all 1


COMPUTE_DTYPES = {"float32": tf.float32, "mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}


def cross_entropy(logits: tf.Tensor, one_hot: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
    one_hot = tf.cast(one_hot, logits.dtype)
    if label_smoothing > 0:
        one_hot = one_hot * (1.0 - label_smoothing) + label_smoothing / NUM_CLASSES
    return tf.nn.softmax_cross_entropy_with_logits(labels=one_hot, logits=logits)


def preprocess(images: tf.Tensor, normalize: bool, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """uint8 pixels -> floats, scaled to [0, 1] unless the normalization experiment turns it off.

    Where bfloat16 arithmetic is emulated (`bf16_products_in_float32`), a bfloat16 batch is
    scaled in float32 and rounded once: the same values as dividing in bfloat16 (whose CPU
    kernel divides in float32 and rounds), without the emulated elementwise kernels. With
    bfloat16 instructions the float32 form was not faster, so it is not used there
    (docs/throughput.md)."""
    if not normalize:
        return tf.cast(images, dtype)
    if dtype == tf.bfloat16 and bf16_products_in_float32():
        return tf.cast(tf.cast(images, tf.float32) / 255.0, dtype)
    return tf.cast(images, dtype) / 255.0


class RunningMetrics(tf.Module):
    """Sums of loss, correct predictions and examples, kept on the device between reads."""

    def __init__(self, name: str):
        super().__init__(name=name)
        with self.name_scope:
            self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
            self.correct = tf.Variable(0, dtype=tf.int64, trainable=False, name="correct")
            self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")

    @tf.Module.with_name_scope  # groups its ops in the Graphs dashboard
    def update(self, losses: tf.Tensor, logits: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        """Add a batch; returns the batch accuracy.

        Inside `strategy.run` (the train step) each replica holds a slice of the global batch: the
        sums are all-reduced over the replicas, so every replica adds the whole batch's to its copy.
        """
        hits = tf.equal(tf.argmax(logits, axis=-1), tf.argmax(one_hot, axis=-1))
        sums = tf.stack(
            [
                tf.reduce_sum(tf.cast(losses, tf.float64)),
                tf.reduce_sum(tf.cast(hits, tf.float64)),
                tf.cast(tf.size(hits), tf.float64),
            ]
        )
        replica = tf.distribute.get_replica_context()
        if replica is not None:  # None in a strategy's scope outside `strategy.run`: one batch
            sums = replica.all_reduce(tf.distribute.ReduceOp.SUM, sums)
        self.loss_sum.assign_add(sums[0])
        self.correct.assign_add(tf.cast(sums[1], tf.int64))
        self.count.assign_add(tf.cast(sums[2], tf.int64))
        return tf.cast(sums[1] / sums[2], tf.float32)

    def result(self) -> dict[str, float]:
        """Mean loss and accuracy so far (reads the device: call between steps, not inside)."""
        count = max(int(self.count.numpy()), 1)
        return {
            "loss": float(self.loss_sum.numpy()) / count,
            "accuracy": int(self.correct.numpy()) / count,
        }

    def reset(self) -> None:
        for var in (self.loss_sum, self.correct, self.count):
            var.assign(tf.zeros_like(var))


class LossScale(tf.Module):
    """Dynamic loss scaling for float16: halve the scale and skip the step when gradients overflow,
    double it after `growth_interval` good steps, so small gradients do not flush to zero."""

    def __init__(self, initial: float = 2.0**15, growth_interval: int = 2000):
        super().__init__(name="loss_scale")
        self.growth_interval = growth_interval
        with self.name_scope:
            self.scale = tf.Variable(initial, trainable=False, name="scale")
            self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    def update(self, finite: tf.Tensor) -> None:
        if finite:
            self.good_steps.assign_add(1)
            if self.good_steps >= self.growth_interval:
                self.scale.assign(self.scale * 2.0)
                self.good_steps.assign(0)
        else:
            self.scale.assign(tf.maximum(self.scale / 2.0, 1.0))
            self.good_steps.assign(0)


class Trainer(tf.Module):
    """Holds the model, optimizer and metrics, and the two compiled steps that use them.

    Built inside `strategy.scope()`, its variables are mirrored on the strategy's replicas and the
    train step runs on each of them (see distribute.py); built outside any scope, it uses TF's
    default strategy, where `strategy.run` is a plain call: one device, the same step.
    """

    def __init__(
        self,
        model: MLP,
        optimizer: Optimizer,
        loss: LossConfig = LossConfig(),
        jit_compile: bool = False,
        device_data: DeviceData | None = None,
        augment: Augmentation | None = None,
        ema: WeightAverage | None = None,
    ):
        super().__init__(name="trainer")
        self.augment = augment or Augmentation()
        self.model, self.optimizer, self.loss, self.ema = model, optimizer, loss, ema
        # What validation, test, export and analysis see: the weight average when there is one.
        self.eval_model = ema.shadow if ema else model
        self.compute_dtype = COMPUTE_DTYPES[loss.precision]
        self.loss_scale = LossScale() if loss.precision == "mixed_float16" else None
        self.device_data, self.jit_compile = device_data, jit_compile
        self.train_metrics = RunningMetrics("train_metrics")
        self.eval_metrics = RunningMetrics("eval_metrics")
        # Set when a step saw a non-finite loss or gradient. Loss scaling must skip such a step's
        # update and go on. Otherwise the run stops at the loop's next check (before any save),
        # so the skip only keeps the weights in memory finite; under XLA the conditional around
        # the in-place update becomes a select that copies the optimizer's slots every step
        # (docs/throughput.md), so there the update is applied and the step only raises the flag.
        self.diverged = tf.Variable(False, trainable=False, name="diverged")
        self.skips_bad_updates = self.loss_scale is not None or not jit_compile
        # Counts every step, skipped updates included, unlike optimizer.iterations.
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.strategy = tf.distribute.get_strategy()
        self.distributed = tf.distribute.has_strategy()
        # A strategy feeds PerReplica batches; their static per-replica shapes keep it to one trace.
        self.train_step = tf.function(
            self._train_step,
            jit_compile=jit_compile or None,
            input_signature=None if self.distributed else BATCH_SPEC,
        )
        # K steps per call, so Python dispatch is paid once per K steps. From the tf.data stream:
        # a graph loop around the (maybe XLA-compiled) step, as XLA cannot compile the iterator.
        # From the on-device data: with XLA, the whole loop is one XLA program.
        self.train_loop = tf.function(self._train_loop)
        self.device_loop = tf.function(
            self._device_loop,
            jit_compile=jit_compile or None,
            input_signature=[tf.TensorSpec([], tf.int32, name="steps")],
        )
        self.eval_step = tf.function(self._eval_step, input_signature=BATCH_SPEC)
        # With a weight average the last weights are validated too, so a run shows what it adds.
        self.eval_last_step = (
            tf.function(self._eval_last_step, input_signature=BATCH_SPEC) if ema else None
        )

    def train_steps(self, batches, count: int) -> dict[str, tf.Tensor]:
        """Run `count` steps in one call: from the on-device data, or from the batch iterator."""
        if self.device_data is not None:
            return self.device_loop(tf.constant(count, tf.int32))
        if count == 1:
            return self.train_step(*next(batches))
        return self.train_loop(batches, tf.constant(count, tf.int32))

    def _train_loop(self, batches, count: tf.Tensor) -> dict[str, tf.Tensor]:
        # The step inlined into the loop's graph saves a nested function call per step; with XLA
        # the loop calls the compiled step.
        step = self.train_step if self.jit_compile else self._train_step
        outputs = _zero_outputs(self.model)
        for _ in tf.range(count):
            outputs = step(*next(batches))
        return outputs

    def _device_loop(self, count: tf.Tensor) -> dict[str, tf.Tensor]:
        data, outputs = self.device_data, _zero_outputs(self.model)
        assert data is not None  # train_steps calls the device loop only with device data
        # A while loop, not `for _ in tf.range(count)`: AutoGraph gives a range loop a maximum
        # iteration count, which XLA takes as a compile-time constant, so the whole-loop program
        # would be compiled again for every call length (the short calls at epoch ends).
        done = tf.constant(0)
        while done < count:
            outputs = self._train_step(*data.batch(self.global_step % data.steps))
            done += 1
        return outputs

    def per_example_loss(
        self, images: tf.Tensor, one_hot: tf.Tensor, training: bool, model: MLP | None = None
    ):
        """Per-example losses and float32 logits of `model` (default: the trained one); training
        computes in the mixed-precision dtype."""
        dtype = self.compute_dtype if training else tf.float32
        model = self.model if model is None else model
        logits = tf.cast(
            model(preprocess(images, self.loss.normalize, dtype), training=training), tf.float32
        )
        return cross_entropy(logits, one_hot, self.loss.label_smoothing), logits

    def replica_loss(self, losses: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        """This replica's share of the loss: summed over the replicas, the mean over the global
        batch plus the L2 penalty, i.e. the one-device loss (which it is on one device)."""
        if self.loss.class_weights:
            losses = losses * tf.linalg.matvec(one_hot, tf.constant(self.loss.class_weights))
        share = tf.nn.compute_average_loss(losses)
        if self.loss.l2 > 0:
            share += tf.nn.scale_regularization_loss(
                0.5
                * self.loss.l2
                * tf.add_n([tf.reduce_sum(tf.square(k)) for k in self.model.kernels])
            )
        return share

    def _train_step(self, images, one_hot) -> dict[str, tf.Tensor]:
        outputs = self.strategy.run(self._replica_train_step, args=(images, one_hot))
        # Already all-reduced: every replica holds the same values, so the first local one needs
        # no further communication.
        return {
            key: self.strategy.experimental_local_results(value)[0]
            for key, value in outputs.items()
        }

    def _replica_train_step(self, images: tf.Tensor, one_hot: tf.Tensor) -> dict[str, tf.Tensor]:
        """One replica's part of a step; with the all-reduce, every replica applies the same update."""
        variables = self.model.trainable_variables
        if self.augment.active:  # before the step counter moves: the draws are keyed on it
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            images = self.augment.batch(images, one_hot, self.global_step, replica)
        with tf.GradientTape() as tape:
            losses, logits = self.per_example_loss(images, one_hot, training=True)
            share = self.replica_loss(losses, one_hot)
            scaled = share * self.loss_scale.scale if self.loss_scale else share
        # Half-precision gradients go to float32 at once, like the master weights: the norm and
        # the update then run in float32 (CPUs compute elementwise bfloat16 through float32, so
        # casting once first is faster than converting in every elementwise op).
        grads = [tf.cast(g, v.dtype) for g, v in zip(tape.gradient(scaled, variables), variables)]
        if self.loss_scale:
            grads = [g / self.loss_scale.scale for g in grads]
        total, grads = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, (share, grads)
        )
        # tf.linalg.global_norm's own terms, kept per variable for the per-layer norms (no extra op).
        l2_losses = half_squared_norms(grads, self.jit_compile)
        grad_norm = tf.sqrt(tf.reduce_sum(l2_losses) * 2.0, name="global_norm")
        if self.loss.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.loss.clip_norm, use_norm=grad_norm)
        finite = tf.math.is_finite(total) & tf.math.is_finite(grad_norm)
        if not self.skips_bad_updates:
            self._update(grads, variables)
            self.diverged.assign(self.diverged | ~finite)
        elif finite:
            self._update(grads, variables)
        elif self.loss_scale is None or not tf.math.is_finite(total):
            self.diverged.assign(True)  # with loss scaling, only a non-finite loss is divergence
        if self.loss_scale:
            self.loss_scale.update(finite)
        self.global_step.assign_add(1)
        accuracy = self.train_metrics.update(losses, logits, one_hot)
        return {
            "loss": total,
            "accuracy": accuracy,
            "grad_norm": grad_norm,
            "grad_l2_losses": l2_losses,
        }

    def _update(self, grads: list[tf.Tensor], variables) -> None:
        self.optimizer.apply(grads, variables)
        if self.ema:
            self.ema.update(variables, self.optimizer.iterations)

    def _eval_step(self, images: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        return self._eval_batch(images, one_hot, self.eval_model)

    def _eval_last_step(self, images: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        return self._eval_batch(images, one_hot, self.model)

    def _eval_batch(self, images: tf.Tensor, one_hot: tf.Tensor, model: MLP) -> tf.Tensor:
        losses, logits = self.per_example_loss(images, one_hot, False, model)
        self.eval_metrics.update(losses, logits, one_hot)
        return logits

    def weights_finite(self) -> bool:
        """False once an update has pushed a weight to inf or NaN, even if the loss was finite."""
        return all(
            bool(tf.reduce_all(tf.math.is_finite(v))) for v in self.model.trainable_variables
        )

    def evaluate(self, dataset: tf.data.Dataset, last_weights: bool = False) -> dict[str, float]:
        """Loss and accuracy over one pass of `dataset`, of the evaluated model (the weight
        average, if kept) or, with `last_weights` and an average, of the trained weights."""
        step = self.eval_last_step if last_weights and self.eval_last_step else self.eval_step
        self.eval_metrics.reset()
        for images, one_hot in dataset:
            step(images, one_hot)
        return self.eval_metrics.result()


def half_squared_norms(grads: list[tf.Tensor], xla: bool) -> tf.Tensor:
    """sum(g**2) / 2 of each gradient (tf.nn.l2_loss), in the form the compiler runs fastest.

    XLA's CPU backend turns a large reduction into a tree of windowed reductions, several times
    slower than summing a matrix's squares with a dot against a vector of ones (docs/throughput.md
    has the timings). Without XLA, TensorFlow's own L2Loss kernel is the faster of the two. They
    differ only in summation order.
    """
    if not xla:
        return tf.stack([tf.nn.l2_loss(g) for g in grads])
    halves = []
    for g in grads:
        squares = tf.square(g)
        if g.shape.rank == 2:
            squares = tf.matmul(squares, tf.ones([g.shape[1], 1], g.dtype))
        halves.append(0.5 * tf.reduce_sum(squares))
    return tf.stack(halves)


def _zero_outputs(model: MLP) -> dict[str, tf.Tensor]:
    """Loop-carried step outputs before the first step of a multi-step call."""
    return {
        "loss": tf.zeros([]),
        "accuracy": tf.zeros([]),
        "grad_norm": tf.zeros([]),
        "grad_l2_losses": tf.zeros([len(model.trainable_variables)]),
    }
