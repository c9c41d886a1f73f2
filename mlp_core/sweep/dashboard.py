"""The sweep's HParams dashboard: one config with the searched domains at the sweep's root, and
per trial its outcome (status and the sweep's own metrics) beside the run's usual summaries.

Each trial's run writes its hyperparameter values itself (`write_run_description`, without a
config of its own); validation and test accuracy and loss come from the run's `validation/` and
`test/` scalars; wall time, training examples/s and whether the trial was pruned are written here
into `<trial>/sweep/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mlp_core.config.config import Config
from mlp_core.sweep.space import Domain, field_value

GROUP = "sweep"  # the trial's sub-run that holds the sweep's metrics
STATUS = {"complete": "STATUS_SUCCESS", "pruned": "STATUS_UNKNOWN", "failed": "STATUS_FAILURE"}


def metrics() -> list:
    """The dashboard's metric columns: (tag, sub-run) pairs the trials write."""
    from tensorboard.plugins.hparams import api as hp

    shown = [
        ("accuracy", "validation", "validation accuracy"),
        ("loss", "validation", "validation loss"),
        ("accuracy", "test", "test accuracy"),
        ("loss", "test", "test loss"),
        ("wall_seconds", GROUP, "wall time (s)"),
        ("train_examples_per_sec", GROUP, "training examples/s"),
        ("pruned", GROUP, "pruned (1) or not (0)"),
    ]
    return [hp.Metric(tag, group=group, display_name=name) for tag, group, name in shown]


def hparam(domain: Domain):
    """The HParams column of one swept field, its domain in the values the trials write."""
    from tensorboard.plugins.hparams import api as hp

    from mlp_core.observers.summaries import hparam_values

    if domain.kind == "float":
        return hp.HParam(domain.name, hp.RealInterval(domain.low, domain.high))
    if domain.kind == "int":
        return hp.HParam(domain.name, hp.IntInterval(int(domain.low), int(domain.high)))
    # The trials write what hparam_values makes of the field: the same conversion gives the domain.
    written = [
        hparam_values(Config(**{domain.name: field_value(domain.name, c)}))[domain.name]
        for c in domain.choices
    ]
    return hp.HParam(domain.name, hp.Discrete(written))


def write_config(sweep_dir: Path, space: Sequence[Domain]) -> None:
    """The sweep's one HParams config, at its root; written once (a rerun finds it there)."""
    if any(sweep_dir.glob("events.out.tfevents.*")):
        return
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(sweep_dir))
    with writer.as_default():
        hp.hparams_config(hparams=[hparam(d) for d in space], metrics=metrics())
    writer.close()


def write_outcome(run_dir: Path, state: str, step: int, values: dict[str, float]) -> None:
    """A finished trial's status (the dashboard's session status) and sweep metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api_pb2, summary

    writer = tf.summary.create_file_writer(str(run_dir / GROUP))
    with writer.as_default(step=step):
        for tag, value in {**values, "pruned": float(state == "pruned")}.items():
            tf.summary.scalar(tag, value)
    writer.close()
    status = getattr(api_pb2, STATUS[state])
    with tf.summary.create_file_writer(str(run_dir)).as_default(step=0):
        pb = summary.session_end_pb(status)
        tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=0)
