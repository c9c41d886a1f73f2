"""The training split held on the device, so a compiled loop can draw its own batches.

For a dataset this small, a copy of the whole uint8 split on the device replaces the tf.data
stream: no host-to-device copy per step and no iterator, so one call can run many steps, and with
XLA the whole loop is one program.
"""

from __future__ import annotations

import tensorflow as tf

from mlp_core.core.data import Split
from mlp_core.core.pipeline import (
    FEATURES,
    epoch_order,
    flatten_and_one_hot,
    oversampling_logits,
    steps_per_epoch,
)


class DeviceData(tf.Module):
    """The whole uint8 training split held on the device, batches drawn in-graph by position.

    For small datasets this replaces the tf.data stream: no host-to-device copy per step and no
    iterator, so a compiled loop can run many steps per call. Each epoch's order is the same
    stateless permutation of (seed, epoch) that `train_dataset` uses, so both give the same batches.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        seed: int,
        device: str | None = None,
        balance: bool = False,
    ):
        super().__init__(name="device_data")
        self.batch_size, self.seed, self.size = batch_size, seed, len(split)
        self.logits = tf.constant(oversampling_logits(split.labels)) if balance else None
        self.steps = steps_per_epoch(split, batch_size)
        with tf.device(device or "/CPU:0"):
            # Variables, not constants: XLA would otherwise compile the whole set into its program.
            self.images = tf.Variable(
                split.images.reshape(len(split), FEATURES), trainable=False, name="images"
            )
            self.labels = tf.Variable(split.labels, trainable=False, name="labels")
            self.order = tf.Variable(
                tf.zeros([self.steps * batch_size], tf.int64), trainable=False, name="epoch_order"
            )

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch `epoch`'s order (0-based), once per epoch, outside the compiled steps."""
        self.order.assign(
            epoch_order(self.size, self.steps * self.batch_size, self.seed, epoch, self.logits)
        )

    def batch(self, position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Batch `position` (0-based within the epoch), in-graph."""
        # Gathered, not sliced: XLA takes a slice's start as a compile-time constant, so a loop
        # compiled whole would be compiled again for every position the step counter reaches.
        start = tf.cast(position, tf.int64) * self.batch_size
        index = tf.gather(self.order, start + tf.range(self.batch_size, dtype=tf.int64))
        return flatten_and_one_hot(tf.gather(self.images, index), tf.gather(self.labels, index))
