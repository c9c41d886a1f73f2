"""The MLP as plain tf.Modules: every variable is created, named, in `__init__`.

No Keras layers and no lazy building: the model's variables exist (and can be checkpointed or
inspected) as soon as it is constructed. The model returns logits; softmax lives in the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import tensorflow as tf

ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "relu": tf.nn.relu,
    "gelu": tf.nn.gelu,
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "elu": tf.nn.elu,
    "swish": tf.nn.silu,
    "linear": tf.identity,
}


Affine = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, Callable], tf.Tensor]


def affine(
    x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, activation: Callable[[tf.Tensor], tf.Tensor]
) -> tf.Tensor:
    """activation(x @ kernel + bias), in x's dtype: what a layer computes unless a precision
    policy hands it another way to compute the same thing."""
    return activation(tf.matmul(x, kernel) + bias)


def init_weights(
    rng: tf.random.Generator, name: str, fan_in: int, fan_out: int, dtype: tf.DType = tf.float32
) -> tf.Tensor:
    """He (for ReLU-like units) or Glorot (for tanh/sigmoid) initial values, uniform or normal."""
    fan = fan_in if name.startswith("he") else (fan_in + fan_out) / 2
    shape = [fan_in, fan_out]
    if name.endswith("uniform"):
        limit = math.sqrt(3.0 / fan) * (math.sqrt(2.0) if name.startswith("he") else 1.0)
        return rng.uniform(shape, -limit, limit, dtype=dtype)
    std = math.sqrt(1.0 / fan) * (math.sqrt(2.0) if name.startswith("he") else 1.0)
    return rng.truncated_normal(shape, stddev=std / 0.87962566103423978, dtype=dtype)


class Dense(tf.Module):
    """y = activation(x @ kernel + bias)."""

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        rng: tf.random.Generator,
        activation: str = "linear",
        initializer: str = "he_uniform",
        dtype: tf.DType = tf.float32,
        name: str | None = None,
        compute: Affine = affine,
    ):
        super().__init__(name=name)
        self.activation, self.compute = ACTIVATIONS[activation], compute
        with self.name_scope:
            self.kernel = tf.Variable(
                init_weights(rng, initializer, fan_in, fan_out, dtype), name="kernel"
            )
            self.bias = tf.Variable(tf.zeros([fan_out], dtype=dtype), name="bias")

    @tf.Module.with_name_scope  # groups its ops in the Graphs dashboard
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Computes in x's dtype: float32 weights are cast for mixed precision (a no-op otherwise)."""
        kernel, bias = tf.cast(self.kernel, x.dtype), tf.cast(self.bias, x.dtype)
        return self.compute(x, kernel, bias, self.activation)


class MLP(tf.Module):
    """784 -> hidden... -> 10 logits, with inverted dropout after each hidden layer in training."""

    def __init__(
        self,
        hidden: Sequence[int] = (512, 256),
        activation: str = "relu",
        dropout: float = 0.0,
        initializer: str = "he_uniform",
        seed: int = 0,
        inputs: int = 784,
        classes: int = 10,
        dtype: tf.DType = tf.float32,
        name: str = "mlp",
        compute: Affine = affine,
    ):
        super().__init__(name=name)
        self.dropout = float(dropout)
        sizes = [inputs, *hidden, classes]
        with self.name_scope:
            init_rng = tf.random.Generator.from_seed(seed)
            # The dropout generator's state is a variable, so it checkpoints with the model.
            self.dropout_rng = tf.random.Generator.from_seed(seed + 1)
            self.layers = [
                Dense(
                    sizes[i],
                    sizes[i + 1],
                    init_rng,
                    activation if i < len(sizes) - 2 else "linear",
                    initializer,
                    dtype,
                    name=f"dense_{i}" if i < len(sizes) - 2 else "logits",
                    compute=compute,
                )
                for i in range(len(sizes) - 1)
            ]

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.forward(x, training)[-1]

    @tf.Module.with_name_scope  # groups its ops in the Graphs dashboard
    def forward(self, x: tf.Tensor, training: bool = False) -> list[tf.Tensor]:
        """Every layer's output: hidden activations (after dropout) and, last, the logits."""
        outputs = []
        for layer in self.layers[:-1]:
            x = self._dropout(layer(x), training)
            outputs.append(x)
        outputs.append(self.layers[-1](x))
        return outputs

    def _dropout(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        """Inverted dropout from 16 random bits per unit, not a 32-bit float: random numbers are
        drawn on one thread, so halving them speeds up the step. The drop
        probability is the rate rounded to 1/65536;
        survivors are scaled by the exact keep probability, so expected activations are unchanged."""
        if not training or self.dropout == 0.0:
            return x
        size = tf.size(x)
        words = self.dropout_rng.uniform_full_int([(size + 1) // 2], tf.uint32)
        bits = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]
        keep = tf.reshape(bits, tf.shape(x)) >= self.drop_threshold
        return x * tf.cast(keep, x.dtype) * tf.cast(1.0 / self.keep_probability, x.dtype)

    @property
    def drop_threshold(self) -> int:
        return round(self.dropout * 65536)

    @property
    def keep_probability(self) -> float:
        return 1.0 - self.drop_threshold / 65536

    @property
    def kernels(self) -> list[tf.Variable]:
        return [layer.kernel for layer in self.layers]
