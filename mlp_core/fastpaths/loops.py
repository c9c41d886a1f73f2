"""Multi-step calls: the plain step wrapped into loops, so Python dispatch is paid once per call.

As Orbit's `loop_fns` do, a loop takes a step function and runs it `count` times in one graph.
From a `tf.data` iterator the loop is a graph `while` around the step (XLA cannot compile the
iterator, so under XLA the loop calls the compiled step); from device-resident data the whole loop
is one function, and under XLA one program. `count` is a tensor, so calls of every length share a
trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import tensorflow as tf

from mlp_core.core.step import BATCH_SPEC
from mlp_core.fastpaths.device_data import DeviceData

Step = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
COUNT_SPEC = tf.TensorSpec([], tf.int32, name="steps")


def repeat_from_iterator(step: Step, batches: Iterator, count: tf.Tensor) -> tf.Tensor:
    """`count` steps on the iterator's next batches; returns the last step's loss."""
    loss = tf.zeros([])
    for _ in tf.range(count):
        loss = step(*next(batches))
    return loss


def repeat_on_device(step: Step, data: DeviceData, counter: tf.Variable, count: tf.Tensor):
    """`count` steps on batches drawn in-graph at the step counter's position in the epoch."""
    # A while loop, not `for _ in tf.range(count)`: AutoGraph gives a range loop a maximum
    # iteration count, which XLA takes as a compile-time constant, so the whole-loop program
    # would be compiled again for every call length (the short calls at epoch ends).
    done, loss = tf.constant(0), tf.zeros([])
    while done < count:
        loss = step(*data.batch(counter % data.steps))
        done += 1
    return loss


class StepLoops:
    """The compiled ways to run a step: one batch, `count` from an iterator, `count` on device.

    `step` is the plain Python step (inlined into the loops), `jit` compiles with XLA.
    """

    def __init__(
        self, step: Step, counter: tf.Variable, data: DeviceData | None = None, jit: bool = False
    ):
        self.single = tf.function(step, jit_compile=jit or None, input_signature=BATCH_SPEC)
        body = self.single if jit else step  # XLA cannot take the iterator: call the program
        self.from_iterator = tf.function(lambda batches, n: repeat_from_iterator(body, batches, n))
        self.on_device = None
        if data is not None:
            self.on_device = tf.function(
                lambda n: repeat_on_device(step, data, counter, n),
                jit_compile=jit or None,
                input_signature=[COUNT_SPEC],
            )

    def __call__(self, batches: Iterator | None, count: int) -> tf.Tensor:
        """Run `count` steps: on the device data if there is any, else from `batches`."""
        if self.on_device is not None:
            return self.on_device(tf.constant(count, tf.int32))
        assert batches is not None  # without device data the loop is handed an iterator
        if count == 1:
            return self.single(*next(batches))
        return self.from_iterator(batches, tf.constant(count, tf.int32))


def xla_half_squared_norms(grads) -> tf.Tensor:
    """sum(g**2) / 2 of each gradient, in the form XLA's CPU backend runs fastest.

    XLA turns a large reduction into a tree of windowed reductions, several times slower than
    summing a matrix's squares with a dot against a vector of ones. Without XLA, TensorFlow's own
    L2Loss kernel (`core.optim.half_squared_norms`) is the faster. They differ only in summation
    order.
    """
    halves = []
    for g in grads:
        squares = tf.square(g)
        if g.shape.rank == 2:
            squares = tf.matmul(squares, tf.ones([g.shape[1], 1], g.dtype))
        halves.append(0.5 * tf.reduce_sum(squares))
    return tf.stack(halves)
