"""The plain step on several replicas: what `tf.distribute` adds around it, and nothing more.

Each replica runs the same step on its slice of the global batch. Two things make the replicas
agree: the optimizer wrapper averages the gradients over the replicas before the update (so every
replica applies the same one), and the metrics sum each batch over the replicas (so every copy
holds the whole batch's sums and reading one needs no communication).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import tensorflow as tf

from mlp_core.core.data import Split
from mlp_core.core.optim import OptimizerWrapper
from mlp_core.core.pipeline import batch_indices, gather_batches

Step = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def cross_replica_sum(value: tf.Tensor) -> tf.Tensor:
    """`value` summed over the replicas (itself on one device)."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


class CrossReplicaMean(OptimizerWrapper):
    """Averages the gradients over the replicas, then lets the inner optimizer apply them.

    Each replica's loss is the mean over its slice, so the mean of their gradients is the
    gradient of the global batch's mean loss: the one-device update."""

    def __init__(self, inner):
        super().__init__(inner, name="cross_replica_mean")

    def apply(self, grads, variables, keep: tf.Tensor | None = None) -> None:
        replica = tf.distribute.get_replica_context()
        grads = [tf.cast(g, v.dtype) for g, v in zip(grads, variables)]
        self.inner.apply(replica.all_reduce(tf.distribute.ReduceOp.MEAN, grads), variables, keep)


class ReplicatedStep:
    """One step per call on every replica of `strategy`, fed per-replica batches."""

    def __init__(self, step: Step, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        # Per-replica batches have static per-replica shapes, which keeps it to one trace.
        self.single = tf.function(self._run(step))

    def _run(self, step: Step) -> Step:
        def replicated(images, one_hot) -> tf.Tensor:
            losses = self.strategy.run(step, args=(images, one_hot))
            # The first local replica's loss: reducing it over the workers would cost a collective
            # per step, and the loop reads the summed metrics instead.
            return self.strategy.experimental_local_results(losses)[0]

        return replicated

    def __call__(self, batches: Iterator | None, count: int) -> tf.Tensor:
        """Run `count` steps, one call each (the fast paths' loops are for one device)."""
        assert batches is not None
        loss = tf.zeros([])
        for _ in range(count):
            loss = self.single(*next(batches))
        return loss


def replica_batches(
    split: Split,
    batch_size: int,
    seed: int,
    start_epoch: int,
    skip_batches: int,
    replicas: int,
    local_replicas: range,
    balance: bool = False,
) -> tf.data.Dataset:
    """This input pipeline's share of the one-device stream, from (epoch, batch) on.

    `batch_size` is the global batch: each is cut into `replicas` contiguous slices, and the
    pipeline yields the slices of its `local_replicas`, one element each, so the replicas
    together see exactly the batches of a one-device run (a strategy places them itself)."""
    if batch_size % replicas:
        raise ValueError(f"batch size {batch_size} is not divisible by {replicas} replicas")
    first, count = local_replicas.start, len(local_replicas)
    indices = batch_indices(split, batch_size, seed, start_epoch, balance).skip(skip_batches)
    slices = indices.flat_map(
        lambda index: tf.data.Dataset.from_tensor_slices(
            tf.reshape(index, [replicas, -1])[first : first + count]
        )
    )
    return gather_batches(slices, split)
