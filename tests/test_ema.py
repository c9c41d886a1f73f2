"""The weight average (`--ema-decay`): its update rule, and that a run evaluates, saves and hands on
the average rather than the last iterate."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from mlp_core.config.config import parse_config
from mlp_core.core.model import MLP
from mlp_core.evaluation.predictions import predict_probabilities
from mlp_core.recipe.ema import WeightAverage
from mlp_core.training.checkpointing import restore_newest
from mlp_core.training.loop import build_model, load_trained_model, train_and_evaluate


def test_the_average_moves_by_the_hand_computed_amount():
    weights, shadow = MLP(hidden=(3,), inputs=4, classes=2), MLP(hidden=(3,), inputs=4, classes=2)
    for w, s in zip(weights.trainable_variables, shadow.trainable_variables):
        w.assign(tf.ones_like(w))
        s.assign(tf.zeros_like(s))
    average = WeightAverage(shadow, decay=0.999)
    average.update(weights.trainable_variables, tf.constant(1, tf.int64))
    # Update 1: d = min(0.999, 2/11), so the average moves 9/11 of the way from 0 to 1.
    for s in shadow.trainable_variables:
        np.testing.assert_allclose(s.numpy(), 9 / 11, rtol=1e-6)
    average.update(weights.trainable_variables, tf.constant(10_000, tf.int64))
    # Late on d = 0.999 exactly: the remaining gap of 2/11 shrinks by a factor 0.999.
    for s in shadow.trainable_variables:
        np.testing.assert_allclose(s.numpy(), 1 - 2 / 11 * 0.999, rtol=1e-6)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match="EMA decay"):
        WeightAverage(MLP(hidden=(), inputs=4, classes=2), decay)


def test_the_flag_accepts_a_decay_and_refuses_one(capsys):
    assert parse_config(["--ema-decay", "0.999"]).ema_decay == 0.999
    with pytest.raises(SystemExit):
        parse_config(["--ema-decay", "1"])
    assert "--ema-decay" in capsys.readouterr().err


def test_a_run_evaluates_and_hands_on_the_average_not_the_last_weights(tmp_path, mnist):
    config = tiny_config(tmp_path, ema_decay=0.9, epochs=1)
    metrics = train_and_evaluate(config, observers=[])
    run_dir = tmp_path / "logs" / "tiny"
    _, handed_on = load_trained_model(run_dir)
    last = build_model(config)
    assert restore_newest(run_dir / "checkpoints", model=last) is not None
    gaps = [
        np.abs(a.numpy() - b.numpy()).max()
        for a, b in zip(handed_on.trainable_variables, last.trainable_variables)
    ]
    assert min(gaps) > 1e-4  # two different sets of weights were saved
    test = mnist.test
    accuracy = {
        name: float(
            np.mean(predict_probabilities(model, test.images, True).argmax(1) == test.labels)
        )
        for name, model in (("average", handed_on), ("last", last))
    }
    assert metrics["test_accuracy"] == pytest.approx(accuracy["average"], abs=1e-6)
    assert accuracy["average"] != accuracy["last"]
    # Validation reports both, so a run shows what the average adds.
    record = metrics["history"][-1]
    assert record["val_accuracy"] != record["val_last_accuracy"]
