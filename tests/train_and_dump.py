"""Test helper: train as scripts/train.py does, then save this worker's final weights.

    python tests/train_and_dump.py OUT.npz [train.py flags, --resume included]

OUT.npz holds the weights (`w0`, `w1`, ...), the number of replicas, how often the train step was
traced, and whether every replica's copy of every variable is the same. The distribution tests run
it in subprocesses, because logical CPUs and TF_CONFIG must be set before TensorFlow starts.
"""

import argparse
import sys

import numpy as np

from mlp_core.config.cli import run_main
from mlp_core.config.config import add_config_flags, config_from_args, explicit_fields
from mlp_core.observers.base import Observer


class DumpWeights(Observer):
    """At the end of the run, writes what the tests compare between processes."""

    def __init__(self, path: str):
        self.path = path

    def on_run_end(self, ctx, metrics) -> None:
        trainer = ctx.trainer
        variables = trainer.model.variables + trainer.optimizer.variables
        copies = [
            [c.numpy() for c in trainer.strategy.experimental_local_results(v)] for v in variables
        ]
        np.savez(
            self.path,
            replicas=trainer.strategy.num_replicas_in_sync,
            traces=trainer.train_step.experimental_get_tracing_count(),
            copies_equal=all(np.array_equal(c[0], other) for c in copies for other in c[1:]),
            **{f"w{i}": v.numpy() for i, v in enumerate(trainer.model.trainable_variables)},
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    add_config_flags(parser)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    from mlp_core.training.loop import train_and_evaluate
    from mlp_core.training.rundir import config_for_resume

    config = config_from_args(args, preset=not args.resume)
    if args.resume:
        config = config_for_resume(config, explicit_fields(args))
    train_and_evaluate(config, observers=[DumpWeights(args.out)], resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
