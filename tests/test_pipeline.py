"""tf.data pipelines: dtypes and shapes, epochs, seeded reshuffling, prefetch to a device."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mlp_core.core.data import Split
from mlp_core.core.pipeline import eval_dataset, steps_per_epoch, train_dataset
from mlp_core.fastpaths.device_data import DeviceData


def _numbered(n: int) -> Split:
    """Images whose first pixel holds the example's index, so batches can be traced back."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n)
    return Split(images, (np.arange(n) % 10).astype(np.uint8))


def _epochs(ds, steps, count):
    it = iter(ds)
    return [np.concatenate([next(it)[0].numpy()[:, 0] for _ in range(steps)]) for _ in range(count)]


def test_train_batches_are_uint8_flat_and_one_hot():
    split = _numbered(100)
    images, labels = next(iter(train_dataset(split, 32, seed=0)))
    assert images.dtype == tf.uint8 and images.shape == (32, 784)
    assert labels.dtype == tf.float32 and labels.shape == (32, 10)
    np.testing.assert_array_equal(np.argmax(labels, 1), images.numpy()[:, 0] % 10)
    np.testing.assert_array_equal(labels.numpy().sum(1), np.ones(32))


def test_each_epoch_is_a_new_seeded_permutation():
    split = _numbered(96)
    first, second = _epochs(train_dataset(split, 32, seed=7), steps_per_epoch(split, 32), 2)
    assert sorted(first) == list(range(96)) and sorted(second) == list(range(96))
    assert not np.array_equal(first, second)
    again = _epochs(train_dataset(split, 32, seed=7), 3, 2)
    np.testing.assert_array_equal(np.concatenate([first, second]), np.concatenate(again))
    other = _epochs(train_dataset(split, 32, seed=8), 3, 1)[0]
    assert not np.array_equal(first, other)


def test_training_drops_the_remainder_and_eval_keeps_everything():
    split = _numbered(100)
    assert steps_per_epoch(split, 32) == 3
    sizes = [int(x.shape[0]) for x, _ in eval_dataset(split, 32)]
    assert sizes == [32, 32, 32, 4]


def test_prefetch_to_device_path_runs_on_cpu():
    split = _numbered(64)
    images, labels = next(iter(train_dataset(split, 16, seed=0, device="/CPU:0")))
    assert images.device.endswith("CPU:0") and images.shape == (16, 784)
    batches = list(eval_dataset(split, 16, device="/CPU:0"))
    assert len(batches) == 4 and all(x.device.endswith("CPU:0") for x, _ in batches)


def _first_pixels(ds, count):
    it = iter(ds)
    return np.concatenate([next(it)[0].numpy()[:, 0] for _ in range(count)])


def test_stream_rebuilt_at_any_position_continues_it_exactly():
    split = _numbered(100)  # 3 batches of 32 per epoch, 4 examples dropped
    stream = _first_pixels(train_dataset(split, 32, seed=3), 9)
    for epoch, offset in [(0, 2), (1, 0), (1, 1), (2, 2)]:
        for device in (None, "/CPU:0"):
            rebuilt = train_dataset(
                split, 32, seed=3, device=device, start_epoch=epoch, skip_batches=offset
            )
            start = (3 * epoch + offset) * 32
            np.testing.assert_array_equal(_first_pixels(rebuilt, 1), stream[start : start + 32])


def test_iterator_checkpoint_restores_the_position(tmp_path):
    split = _numbered(100)
    it = iter(train_dataset(split, 32, seed=3))
    for _ in range(4):
        next(it)
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "it"))
    expected = [next(it)[0].numpy() for _ in range(3)]
    fresh = iter(train_dataset(split, 32, seed=3))
    tf.train.Checkpoint(iterator=fresh).read(path).assert_consumed()
    for batch in expected:
        np.testing.assert_array_equal(next(fresh)[0].numpy(), batch)


def test_device_batches_match_the_stream_and_compile_once_under_xla():
    """The whole multi-step loop is one XLA program: its batch position must stay a runtime value.
    Were it a compile-time constant (as a slice's start is), the program would differ, and be
    compiled again, at every position."""
    split = _numbered(256)
    data = DeviceData(split, 32, seed=3)
    data.set_epoch(1)
    position = tf.Variable(0, dtype=tf.int64)
    compiled = tf.function(lambda: data.batch(position)[0], jit_compile=True)
    stream = iter(train_dataset(split, 32, seed=3).skip(data.steps))  # epoch 1
    programs = set()
    for step in range(3):
        position.assign(step)
        np.testing.assert_array_equal(compiled().numpy(), next(stream)[0].numpy())
        programs.add(compiled.experimental_get_compiler_ir()(stage="hlo"))
    assert len(programs) == 1
