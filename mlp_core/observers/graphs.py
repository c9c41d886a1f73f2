"""The op graphs of the compiled train and eval steps, for TensorBoard's Graphs dashboard.

Both steps have a fixed `input_signature`, so their concrete functions are exactly what runs; the
graph is written once per run (`<run>/train` holds the train step, `<run>/validation` the eval
step). The multi-step loops (`--steps-per-call`) run this same step as the body of a While loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from mlp_core.training.trainer import Trainer


def write_step_graphs(trainer: Trainer, writers: dict[str, tf.summary.SummaryWriter]) -> bool:
    """Write the train step's graph to writers["train"], the eval step's to writers["validation"].

    Under a tf.distribute strategy the train step has no input signature (it takes per-replica
    batches), so nothing is written; returns whether the graphs were written.
    """
    if trainer.distributed:
        return False
    for name, function in (
        ("train", trainer.train_step),
        ("validation", trainer.eval_step.compiled),
    ):
        with writers[name].as_default():
            tf.summary.graph(function.get_concrete_function().graph)
    return True
