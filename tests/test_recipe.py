"""Presets and explicit flags; class weights and the class-balanced sampler on a small skewed set."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tensorflow as tf

from mlp_core.config.config import Config, add_config_flags, config_from_args, explicit_fields
from mlp_core.config.presets import PRESETS, apply_preset, describe
from mlp_core.core.data import Split
from mlp_core.core.errors import UserError
from mlp_core.core.pipeline import (
    class_counts,
    epoch_order,
    oversampling_logits,
    train_dataset,
)
from mlp_core.core.step import cross_entropy, make_loss
from mlp_core.fastpaths.device_data import DeviceData
from mlp_core.recipe.balance import balanced_class_weights

COUNTS = np.array([400, 10, 50, 100, 200, 30, 60, 80, 40, 30])  # 1,000 labels, class 1 rare


def skewed() -> Split:
    labels = np.repeat(np.arange(10), COUNTS).astype(np.uint8)
    labels = labels[np.random.default_rng(0).permutation(len(labels))]
    images = np.broadcast_to(labels[:, None, None], (len(labels), 28, 28)).astype(np.uint8)
    return Split(images, labels)  # each image's pixels are its label: batches show their classes


def parsed(*argv: str) -> Config:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return apply_preset(
        config_from_args(parser.parse_args(list(argv))), explicit_fields(list(argv))
    )


def test_presets_fill_in_what_the_command_line_did_not_set():
    best = parsed("--preset", "best")
    assert best.preset == "best" and best.augment == PRESETS["best"]["augment"]
    assert best.hidden == PRESETS["best"]["hidden"] and best.epochs == PRESETS["best"]["epochs"]
    mine = parsed("--preset", "best", "--epochs", "2", "--hidden", "64", "--augment", "none")
    assert (mine.epochs, mine.hidden, mine.augment) == (2, (64,), "none")
    assert mine.dropout == PRESETS["best"]["dropout"]  # the rest still comes from the preset
    # an explicit flag wins even when it repeats the Config default the preset changes
    assert parsed("--preset", "best", "--epochs", "20").epochs == 20
    assert parsed() == Config() and parsed("--preset", "default") == Config()
    assert parsed("--preset", "quick").epochs == PRESETS["quick"]["epochs"]
    assert (
        Config.from_dict(mine.to_dict()) == mine
    )  # the preset's name and values reach config.json
    line = describe(mine, explicit_fields(["--preset", "best", "--epochs", "2"]))
    assert line.startswith("preset best: ") and "--augment affine+elastic" in line
    assert "--epochs" not in line.split("(")[0] and line.endswith("(given explicitly: --epochs)")


def test_balanced_class_weights_equalize_the_classes():
    labels = skewed().labels
    weights = np.array(balanced_class_weights(labels))
    np.testing.assert_allclose(weights, 1000 / (10 * COUNTS))
    np.testing.assert_allclose(weights * COUNTS, 100.0)  # every class the same total weight
    assert weights[labels].mean() == pytest.approx(1.0)  # the loss keeps its scale
    with pytest.raises(UserError, match="no training images of class 9"):
        balanced_class_weights(labels[labels != 9])


def test_the_weighted_loss_is_the_mean_of_weight_times_loss():
    split = skewed()
    labels = tf.constant([0, 1, 1, 3])
    logits = tf.random.stateless_normal([4, 10], seed=(1, 2))
    losses = cross_entropy(logits, tf.one_hot(labels, 10)).numpy()
    weights = balanced_class_weights(split.labels)
    weighted = make_loss(class_weights=weights)(logits, tf.one_hot(labels, 10)).numpy()
    w = 1000 / (10 * COUNTS)
    expected = (w[0] * losses[0] + w[1] * losses[1] + w[1] * losses[2] + w[3] * losses[3]) / 4
    assert weighted == pytest.approx(expected, rel=1e-6)
    assert make_loss()(logits, tf.one_hot(labels, 10)).numpy() == pytest.approx(losses.mean())


def test_oversampling_draws_every_class_equally_often_deterministically():
    split = skewed()
    logits = tf.constant(oversampling_logits(split.labels))
    order = epoch_order(len(split), 20_000, 3, 0, logits).numpy()
    share = class_counts(split.labels[order]) / len(order)
    np.testing.assert_allclose(share, 0.1, atol=0.015)  # the plain epoch: share of class 1 = 0.01
    np.testing.assert_array_equal(order, epoch_order(len(split), 20_000, 3, 0, logits).numpy())
    assert not np.array_equal(order, epoch_order(len(split), 20_000, 3, 1, logits).numpy())


def test_both_input_paths_draw_the_same_balanced_batches_and_resume_at_any_batch():
    split, batch = skewed(), 100
    stream = iter(train_dataset(split, batch, seed=5, balance=True))
    first_two_epochs = [next(stream)[0].numpy() for _ in range(20)]
    device = DeviceData(split, batch, seed=5, balance=True)
    device.set_epoch(1)
    np.testing.assert_array_equal(device.batch(tf.constant(3))[0].numpy(), first_two_epochs[13])
    resumed = iter(train_dataset(split, batch, seed=5, start_epoch=1, skip_batches=3, balance=True))
    np.testing.assert_array_equal(next(resumed)[0].numpy(), first_two_epochs[13])
    seen = np.concatenate(first_two_epochs)[:, 0]
    assert 0.05 < np.mean(seen == 1) < 0.15  # the rare class, 1 % of the set, is 10 % of batches
