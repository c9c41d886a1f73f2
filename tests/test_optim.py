"""Optimizers against keras.optimizers on the same gradients, and the schedules' shape."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlp_core.core.optim import Constant, WarmupCosine, make_optimizer, warmup_steps

KERAS = {
    "sgd": lambda lr, wd: keras.optimizers.SGD(lr),
    "momentum": lambda lr, wd: keras.optimizers.SGD(lr, momentum=0.9),
    "nesterov": lambda lr, wd: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
    "adam": lambda lr, wd: keras.optimizers.Adam(lr),
    "adamw": lambda lr, wd: keras.optimizers.AdamW(lr, weight_decay=wd),
}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("name", sorted(KERAS))
def test_matches_keras_after_ten_steps(name, fused):
    rng = np.random.default_rng(0)
    shapes = {"kernel": (6, 4), "bias": (4,)}
    start = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = [
        {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(10)
    ]
    ours_vars = [tf.Variable(start[k], name=k) for k in shapes]
    keras_vars = [keras.Variable(start[k], name=k) for k in shapes]
    lr, wd = 0.01, 0.1
    ours = make_optimizer(name, ours_vars, Constant(lr), momentum=0.9, weight_decay=wd, fused=fused)
    theirs = KERAS[name](lr, wd)
    if name == "adamw":
        theirs.exclude_from_weight_decay(var_names=["bias"])  # ours decays matrices only
    step = tf.function(lambda g: ours.apply(g, ours_vars))
    for g in grads:
        step([tf.constant(g[k]) for k in shapes])
        theirs.apply_gradients(zip([tf.constant(g[k]) for k in shapes], keras_vars))
    for mine, ref, first in zip(ours_vars, keras_vars, start.values()):
        assert np.abs(mine.numpy() - first).max() > 1e-3  # the variables did move
        assert np.abs(mine.numpy() - np.asarray(ref.numpy())).max() < 1e-6
    assert int(ours.iterations.numpy()) == 10
    assert step.experimental_get_tracing_count() == 1


def test_optimizer_state_is_all_variables():
    variables = [tf.Variable(tf.zeros([3, 2]), name="w"), tf.Variable(tf.zeros([2]), name="b")]
    adam = make_optimizer("adam", variables, Constant(0.1))
    assert len(adam.variables) == 1 + 2 * len(variables)  # step count, then m and v per variable
    assert len(make_optimizer("sgd", variables, Constant(0.1)).variables) == 1


def test_warmup_cosine_schedule_shape():
    schedule = WarmupCosine(peak=1.0, warmup_steps=10, total_steps=110)
    value = lambda step: float(schedule(tf.constant(step)).numpy())  # noqa: E731
    assert value(0) == pytest.approx(0.1) and value(9) == pytest.approx(1.0)
    assert value(10) == pytest.approx(1.0) and value(60) == pytest.approx(0.5)
    assert value(110) == pytest.approx(0.0, abs=1e-7) and value(500) == pytest.approx(0.0, abs=1e-7)
    values = [value(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert float(Constant(0.3)(tf.constant(7)).numpy()) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "epochs, steps, expected",
    [
        (20, 390, 390),  # the default run keeps its one warm-up epoch
        (1, 390, 20),
        (3, 390, 59),  # short runs: 5 % of the run, so most of it anneals
        (2, 16, 2),
        (40, 390, 390),
    ],
)
def test_warmup_is_at_most_five_percent_of_the_run(epochs, steps, expected):
    assert warmup_steps(1.0, steps, epochs) == expected
    assert warmup_steps(0.0, steps, epochs) == 0


def test_a_one_epoch_run_reaches_its_peak_early_and_anneals_to_zero():
    """The schedule the loop builds (one for every strategy: steps count global batches)."""
    from mlp_core.config.config import Config
    from mlp_core.training.trainer import build_trainer

    schedule = build_trainer(
        Config(epochs=1, hidden=(8,)), steps=390
    ).optimizer.schedule  # mid-cosine: 205
    rate = lambda step: float(schedule(tf.constant(step)).numpy())  # noqa: E731
    assert rate(19) == pytest.approx(Config().lr) and rate(18) < Config().lr
    assert (
        rate(205) == pytest.approx(0.5 * Config().lr, rel=1e-3) and rate(389) < 1e-3 * Config().lr
    )
