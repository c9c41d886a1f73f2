"""The MLP: named variables from __init__, correct shapes, and exact gradients."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mlp_core.model import MLP, init_weights
from mlp_core.step import cross_entropy


def test_variables_exist_after_init_with_names_and_shapes():
    model = MLP(hidden=(512, 256), seed=3)
    shapes = {v.name: tuple(v.shape) for v in model.trainable_variables}
    assert shapes == {
        "mlp/dense_0/kernel:0": (784, 512),
        "mlp/dense_0/bias:0": (512,),
        "mlp/dense_1/kernel:0": (512, 256),
        "mlp/dense_1/bias:0": (256,),
        "mlp/logits/kernel:0": (256, 10),
        "mlp/logits/bias:0": (10,),
    }
    assert model(tf.zeros([7, 784])).shape == (7, 10)


def test_initializers_have_the_intended_spread():
    rng = tf.random.Generator.from_seed(0)
    he = init_weights(rng, "he_uniform", 784, 512).numpy()
    glorot = init_weights(rng, "glorot_normal", 784, 512).numpy()
    assert np.abs(he).max() <= np.sqrt(6 / 784) and he.std() == pytest.approx(
        np.sqrt(2 / 784), rel=0.02
    )
    assert glorot.std() == pytest.approx(np.sqrt(2 / (784 + 512)), rel=0.03)


def test_same_seed_same_weights_and_dropout_only_in_training():
    a, b = MLP(hidden=(32,), seed=5, dropout=0.5), MLP(hidden=(32,), seed=5, dropout=0.5)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    x = tf.random.stateless_uniform([64, 784], seed=[1, 2])
    np.testing.assert_array_equal(a(x).numpy(), a(x).numpy())
    hidden, clean = a.forward(x, training=True)[0].numpy(), a.forward(x)[0].numpy()
    dropped = (hidden == 0) & (clean != 0)
    assert 0.45 < dropped.sum() / (clean != 0).sum() < 0.55
    kept = hidden != 0  # survivors are scaled up so that the expected activation is unchanged
    np.testing.assert_allclose(hidden[kept], clean[kept] / a.keep_probability, rtol=1e-6)


def test_dropout_rate_is_exact_to_1_in_65536_and_keeps_the_mean():
    model = MLP(hidden=(64,), dropout=0.3, seed=0)
    assert abs(model.keep_probability - 0.7) < 1 / 65536
    ones = tf.ones([4096, 64])
    out = tf.stack([model._dropout(ones, training=True) for _ in range(8)]).numpy()
    assert (out == 0).mean() == pytest.approx(0.3, abs=0.002)  # 2.1M draws: about 6 standard errors
    assert out.mean() == pytest.approx(1.0, abs=0.003)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_gradients_match_central_finite_differences(activation):
    model = MLP(hidden=(5, 4), activation=activation, inputs=6, dtype=tf.float64, seed=1)
    x = tf.random.stateless_normal([8, 6], seed=[0, 1], dtype=tf.float64)
    y = tf.one_hot([0, 1, 2, 3, 4, 5, 6, 7], 10, dtype=tf.float64)
    for layer in model.layers:  # zero biases would put ReLU units exactly on the kink
        layer.bias.assign(
            tf.random.stateless_normal(layer.bias.shape, [2, 3], dtype=tf.float64) * 0.5
        )

    def loss():
        return tf.reduce_mean(cross_entropy(model(x), y, label_smoothing=0.1))

    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, model.trainable_variables)
    eps = 1e-6
    for var, grad in zip(model.trainable_variables, grads):
        flat = var.numpy().ravel()
        numeric = np.empty_like(flat)
        for i in range(flat.size):
            sides = []
            for delta in (eps, -eps):
                bumped = flat.copy()
                bumped[i] += delta
                var.assign(bumped.reshape(var.shape))
                sides.append(loss().numpy())
            numeric[i] = (sides[0] - sides[1]) / (2 * eps)
        var.assign(flat.reshape(var.shape))
        np.testing.assert_allclose(grad.numpy().ravel(), numeric, atol=1e-8, rtol=1e-6)
