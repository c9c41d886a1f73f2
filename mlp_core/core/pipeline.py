"""tf.data input pipelines: uint8 images stay uint8 until they reach the device.

Per batch, a vectorized map flattens images to 784 and one-hot encodes labels. Casting and scaling
to [0, 1] happen inside the compiled step (see `step.py`), so a quarter of the bytes cross to a GPU.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mlp_core.core.data import IMAGE_SIDE, NUM_CLASSES, Split

FEATURES = IMAGE_SIDE * IMAGE_SIDE


def default_device() -> str | None:
    """The device to prefetch batches to: the first GPU if there is one, else None (host)."""
    return "/GPU:0" if tf.config.list_logical_devices("GPU") else None


def flatten_and_one_hot(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[B, 28, 28] uint8 -> [B, 784] uint8 and [B] labels -> [B, 10] float32 one-hot."""
    flat = tf.reshape(images, [-1, FEATURES])
    return flat, tf.one_hot(tf.cast(labels, tf.int32), NUM_CLASSES, dtype=tf.float32)


def class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(labels, np.int64), minlength=NUM_CLASSES)


def oversampling_logits(labels: np.ndarray) -> np.ndarray:
    """Per-example log-probabilities -log(n_c) (unnormalized): every class is drawn equally often."""
    counts = class_counts(labels)
    return -np.log(counts[np.asarray(labels, np.int64)]).astype(np.float32)


def batch_indices(
    split: Split,
    batch_size: int,
    seed: int,
    start_epoch: int = 0,
    balance: bool = False,
) -> tf.data.Dataset:
    """An endless stream of index vectors, one per full batch, from epoch `start_epoch` on.

    Each epoch's order is a stateless permutation of (seed, epoch), so a new order every epoch
    comes from one seed and the stream can be rebuilt exactly at any (epoch, batch). With `balance`
    each epoch is a class-balanced draw with replacement instead (`oversampling_logits`).
    """
    if batch_size > len(split):
        raise ValueError(f"batch size {batch_size} exceeds the {len(split)} training examples")
    steps = steps_per_epoch(split, batch_size)
    logits = tf.constant(oversampling_logits(split.labels)) if balance else None

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order = epoch_order(len(split), steps * batch_size, seed, epoch, logits)
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [steps, batch_size]))

    return tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches)


def gather_batches(
    indices: tf.data.Dataset, split: Split, device: str | None = None
) -> tf.data.Dataset:
    """Index vectors -> (uint8 [B, 784] images, float32 [B, 10] one-hot labels), prefetched.

    The uint8 split is held once in memory; only indices are shuffled and batched, so iterator
    state stays small enough to checkpoint."""
    images, labels = tf.constant(split.images), tf.constant(split.labels)
    ds = indices.map(
        lambda index: flatten_and_one_hot(tf.gather(images, index), tf.gather(labels, index)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _prefetch(ds, device)


def train_dataset(
    split: Split,
    batch_size: int,
    seed: int,
    device: str | None = None,
    start_epoch: int = 0,
    skip_batches: int = 0,
    balance: bool = False,
) -> tf.data.Dataset:
    """An endless stream of full batches from (epoch, batch) on; one epoch is
    len(split) // batch_size of them (see `batch_indices`)."""
    indices = batch_indices(split, batch_size, seed, start_epoch, balance).skip(skip_batches)
    return gather_batches(indices, split, device)


def epoch_order(
    size: int, length: int, seed: int, epoch, logits: tf.Tensor | None = None
) -> tf.Tensor:
    """The first `length` indices of epoch `epoch`'s permutation of range(size): a pure function.
    With per-example `logits`, `length` indices drawn with replacement from their softmax."""
    seeds = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    if logits is not None:
        return tf.random.stateless_categorical(logits[tf.newaxis], length, seeds, dtype=tf.int64)[0]
    return tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), seed=seeds)[
        :length
    ]


def eval_dataset(split: Split, batch_size: int, device: str | None = None) -> tf.data.Dataset:
    """Every example exactly once, in order (the last batch may be smaller)."""
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels)).cache()
    ds = ds.batch(batch_size).map(flatten_and_one_hot, num_parallel_calls=tf.data.AUTOTUNE)
    return _prefetch(ds, device)


def steps_per_epoch(split: Split, batch_size: int) -> int:
    return len(split) // batch_size


def _prefetch(ds: tf.data.Dataset, device: str | None) -> tf.data.Dataset:
    if device is None:
        return ds.prefetch(tf.data.AUTOTUNE)
    return ds.apply(tf.data.experimental.prefetch_to_device(device))
