"""Stops that every worker of a multi-worker run takes together, at the same step.

A scheduler's SIGTERM, or a Ctrl-C, reaches one worker. Were that worker to save and leave on its
own, the others would train on into a collective that never completes, and only one of them would
have saved. Instead each worker just notes its signal; every `AGREE_EVERY` steps, and once more
at the end of the run, all workers sum their notes in one small all-reduce. Every worker then knows
of any worker's signal after the same step, so all of them save that step and stop, and restarting
them all with `--resume` continues from it.

TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler` agrees on a step too (through
the coordination service's key-value store and a watcher thread), but it does not fit this loop: it
restores the newest checkpoint itself when it is built (no fallback past a damaged one, no check
that the checkpoint matches the run), adds its own run counter to the checkpoint, counts calls of
`run` rather than training steps, replaces the SIGTERM handler without handling SIGINT, and exits
through an `exit_fn` that cannot tell the signalled worker from its peers.
"""

from __future__ import annotations

import signal

import tensorflow as tf

from mlp_core.core.errors import Interrupted, UserError

AGREE_EVERY = 16
# When workers received different signals, the later one in this tuple is reported.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopAgreement:
    """Tells every worker, at the same step, whether any worker received a stop signal."""

    def __init__(self, strategy: tf.distribute.Strategy, every: int = AGREE_EVERY):
        self.strategy, self.every = strategy, every
        # Traced once: an eager strategy.run would rebuild its collectives at each check.
        self._sum = tf.function(
            self._replica_sum, input_signature=[tf.TensorSpec([len(SIGNALS)], tf.float32)]
        )

    def due(self, step: int, count: int) -> bool:
        """Whether the call of `count` steps that ended at `step` passed a check. Every worker runs
        the same calls, so all of them check after the same steps."""
        return step // self.every > (step - count) // self.every

    def agree(self, signum: int | None) -> int | None:
        """The signal any worker received (`signum` is this worker's, or None), or None if none did.

        Every worker must call this at the same point: it is a collective operation.
        """
        notes = tf.constant([float(signum == sig) for sig in SIGNALS])
        counts = self._sum(notes).numpy()
        received = [sig for sig, count in zip(SIGNALS, counts, strict=True) if count > 0]
        return received[-1] if received else None

    def _replica_sum(self, notes: tf.Tensor) -> tf.Tensor:
        per_replica = self.strategy.run(tf.identity, args=(notes,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


class PeerStopped(Interrupted):
    """Another worker received the signal; this one saved the same step and stopped with it.

    It exits like the signalled worker (128 + signal): the run stopped for the same reason on all.
    """

    def __init__(self, signum: int, step: int, config) -> None:
        UserError.__init__(
            self,
            f"stopped at step {step} because another worker was stopped by "
            f"{signal.Signals(signum).name}; checkpoint saved. Restart every worker with: "
            f"python scripts/train.py --logdir {config.logdir} --run-name {config.run_name} "
            "--resume",
        )
        self.exit_code = 128 + signum
