"""The MLP: named variables from __init__, correct shapes, exact gradients, and bfloat16 layers
through float32 kernels that round as a bfloat16 kernel would."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mlp_core.core.model import MLP, Dense, init_weights
from mlp_core.core.step import cross_entropy
from mlp_core.fastpaths import precision as precision_module
from mlp_core.fastpaths.precision import matmul, precision_policy


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


def _bf16(shape, seed: int) -> tf.Tensor:
    return tf.cast(np.random.default_rng(seed).normal(size=shape), tf.bfloat16)


def _rounded_exact(a: tf.Tensor, b: tf.Tensor) -> np.ndarray:
    """The exact product of the bfloat16 operands, rounded once to bfloat16."""
    return tf.cast(tf.cast(a, tf.float64) @ tf.cast(b, tf.float64), tf.bfloat16).numpy()


@pytest.mark.parametrize("transpose", [(False, False), (True, False), (False, True)])
def test_bf16_products_through_float32_are_the_rounded_exact_products(transpose):
    """The float32 kernels on bfloat16 operands give a bfloat16 product with float32
    accumulation: nearly every element is the exact product rounded to bfloat16, and none is
    further from it than one bfloat16 step plus float32's summation error bound."""
    a, b = _bf16((128, 784), 0), _bf16((784, 512), 1)
    ta, tb = transpose
    left, right = (tf.transpose(a) if ta else a), (tf.transpose(b) if tb else b)
    product = matmul(left, right, ta, tb, through_float32=True)
    assert product.dtype == tf.bfloat16
    exact = _rounded_exact(a, b).astype(np.float64)
    got = product.numpy().astype(np.float64)
    assert np.mean(got == exact) > 0.999
    step = 2.0 ** (np.floor(np.log2(np.abs(exact) + 1e-30)) - 7)  # 8 significant bits
    magnitudes = np.abs(a.numpy().astype(np.float64)) @ np.abs(b.numpy().astype(np.float64))
    assert np.all(np.abs(got - exact) <= step + 784 * 2.0**-24 * magnitudes)


def test_bf16_gradients_through_float32_match_the_bf16_chain_rule():
    """The casts around the float32 product pass gradients as a bfloat16 product would: the
    input's and the kernel's gradients are the rounded exact products of the bfloat16 upstream
    gradient with the bfloat16 operands."""
    x, kernel, upstream = (
        _bf16((64, 784), 2),
        tf.Variable(tf.random.normal([784, 256])),
        _bf16((64, 256), 3),
    )
    k16 = tf.cast(kernel, tf.bfloat16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = matmul(x, tf.cast(kernel, tf.bfloat16), through_float32=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cast(upstream, tf.float32))
    dx, dk = tape.gradient(loss, [x, kernel])
    assert dx.dtype == tf.bfloat16 and dk.dtype == tf.float32
    for got, want in (
        (dx, _rounded_exact(upstream, tf.transpose(k16))),
        (dk, _rounded_exact(tf.transpose(x), upstream)),
    ):
        assert np.mean(got.numpy().astype(np.float64) == want.astype(np.float64)) > 0.999


@pytest.fixture
def cpu_bf16(monkeypatch):
    """`cpu_bf16(flag)`: the precision policy sees a CPU with (True) or without (False) bfloat16
    instructions; with a GPU the model always uses its bfloat16 kernels, so the tests skip."""
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("with a GPU, bfloat16 products always use its bfloat16 kernels")

    def pretend(has_bf16: bool) -> None:
        precision_module.bf16_products_in_float32.cache_clear()
        monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: has_bf16)

    yield pretend
    precision_module.bf16_products_in_float32.cache_clear()


def test_a_bf16_layer_through_float32_rounds_once_like_a_fused_kernel(cpu_bf16):
    """matmul, bias and ReLU in float32 on the bfloat16 values, then one rounding: the exact
    result rounded to bfloat16, but for the rare sum float32 rounds across a boundary."""
    cpu_bf16(False)
    compute = precision_policy("mixed_bfloat16").affine
    layer = Dense(784, 256, tf.random.Generator.from_seed(0), "relu", compute=compute)
    layer.bias.assign(tf.random.normal([256]))
    x = _bf16((64, 784), 4)
    got = layer(x)
    assert got.dtype == tf.bfloat16
    k, b = (tf.cast(tf.cast(v, tf.bfloat16), tf.float64) for v in (layer.kernel, layer.bias))
    exact = tf.cast(tf.nn.relu(tf.cast(x, tf.float64) @ k + b), tf.bfloat16).numpy()
    assert np.mean(got.numpy() == exact) > 0.999


@pytest.mark.parametrize("has_bf16, kernel_dtype", [(False, tf.float32), (True, tf.bfloat16)])
def test_bf16_models_use_float32_kernels_only_without_bf16_instructions(
    cpu_bf16, has_bf16, kernel_dtype
):
    cpu_bf16(has_bf16)
    mlp = MLP(hidden=(32,), seed=0, compute=precision_policy("mixed_bfloat16").affine)

    def matmul_dtypes(spec: tf.TensorSpec) -> set:
        graph = tf.function(lambda x: mlp(x)).get_concrete_function(spec).graph
        return {op.get_attr("T") for op in graph.get_operations() if op.type == "MatMul"}

    assert matmul_dtypes(tf.TensorSpec([8, 784], tf.bfloat16)) == {kernel_dtype}
    assert matmul_dtypes(tf.TensorSpec([8, 784], tf.float32)) == {tf.float32}
