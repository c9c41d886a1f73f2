"""Scale-out with TensorFlow's own engine, tf.distribute: the same step on several devices or machines.

`--strategy default` is TF's default strategy (one device; `strategy.run` is a plain call),
`mirrored` is `MirroredStrategy` over all local GPUs (or the logical CPUs of `--logical-cpus`), and
`multi_worker` is `MultiWorkerMirroredStrategy` over the machines that `TF_CONFIG` describes. The
trainer is built inside `strategy.scope()`, so every variable (weights, optimizer slots, metrics,
step counters) is mirrored: one copy per replica. Each replica computes its share of the global
batch's loss, the gradients are all-reduced, and every replica applies the same hand-written update
to its own copy (step.py). The chief (worker 0) owns the run directory; the others only read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import tensorflow as tf

from mlp_core.config.config import Config
from mlp_core.core.errors import UserError

TASK_TYPES = ("chief", "worker")
TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def make_strategy(config: Config) -> tf.distribute.Strategy:
    """The strategy named by `--strategy`; call it before anything else makes TF set up devices."""
    split_cpu(config.logical_cpus)
    if config.strategy == "mirrored":
        strategy = mirrored_strategy()
    elif config.strategy == "multi_worker":
        strategy = multi_worker_strategy(config)
    else:
        strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UserError(
            f"--batch-size {config.batch_size} is the global batch and must divide evenly "
            f"among the {replicas} replicas of --strategy {config.strategy}"
        )
    return strategy


def split_cpu(count: int) -> None:
    """Split the CPU into `count` logical devices (0: leave it whole), so `mirrored` runs without GPUs.

    TF fixes its devices the first time it uses them, so this must come first; a process that has
    already set up the same split (a second run in one process) is fine.
    """
    if count == 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise UserError(
                f"--logical-cpus {count}: TensorFlow has already set up its devices in this "
                "process; split the CPU before anything else runs"
            ) from None


def mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """All local GPUs (all-reduce with NCCL), or else every logical CPU (reduced on one of them)."""
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if gpus:
        return tf.distribute.MirroredStrategy(gpus)
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(
        cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def multi_worker_strategy(config: Config) -> tf.distribute.MultiWorkerMirroredStrategy:
    """One replica per GPU (or one CPU) on every worker of TF_CONFIG; waits until all have started."""
    check_tf_config(os.environ.get("TF_CONFIG"))
    if config.run_name is None:
        raise UserError(
            "--strategy multi_worker needs --run-name: every worker must name the same run"
        )
    implementation = tf.distribute.experimental.CommunicationImplementation
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=implementation.NCCL
        if tf.config.list_physical_devices("GPU")
        else implementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def check_tf_config(text: str | None) -> None:
    """One line naming what is wrong with TF_CONFIG, instead of a hang or a traceback later."""
    if not text:
        raise UserError(
            f"--strategy multi_worker needs the TF_CONFIG environment variable, e.g. "
            f"TF_CONFIG='{TF_CONFIG_EXAMPLE}'"
        )
    try:
        spec = json.loads(text)
    except ValueError as err:
        raise UserError(f"TF_CONFIG is not valid JSON: {err}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    if (
        not isinstance(cluster, dict)
        or not cluster.get("worker")
        or not all(_is_address_list(cluster.get(kind, [])) for kind in TASK_TYPES)
    ):
        raise UserError(
            f'TF_CONFIG needs a cluster with a list of "host:port" workers, '
            f"e.g. {TF_CONFIG_EXAMPLE}"
        )
    task = spec.get("task")
    if (
        not isinstance(task, dict)
        or task.get("type") not in TASK_TYPES
        or type(task.get("index")) is not int
        or not 0 <= task["index"] < len(cluster.get(task["type"], []))
    ):
        raise UserError(
            f"TF_CONFIG's task must name this process in the cluster, e.g. "
            f'{{"type": "worker", "index": 0}}; got {json.dumps(task)}'
        )


def _is_address_list(addresses) -> bool:
    return isinstance(addresses, list) and all(
        isinstance(address, str) and address.rpartition(":")[2].isdigit() for address in addresses
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one process that writes the run directory (always, without multi_worker)."""
    return strategy.extended.should_checkpoint


@contextmanager
def worker_failures(config: Config) -> Iterator[None]:
    """A worker that dies aborts its peers' collectives: say so in one line, and how to go on."""
    try:
        yield
    except tf.errors.UnavailableError as err:
        if config.strategy != "multi_worker":
            raise
        raise UserError(
            f"lost contact with another worker ({_abort_reason(err.message)}); restart "
            f"every worker with --run-name {config.run_name} --resume to continue from the "
            "last checkpoint"
        ) from None


def _abort_reason(message: str) -> str:
    """The cause in TF's multi-line abort message, e.g. 'Error reported from /job:worker/task:1:
    The following tasks are unhealthy (stopped sending heartbeats): /job:worker/replica:0/task:1'."""
    lines = message.splitlines()
    for i, line in enumerate(lines):
        if "aborted by:" in line:
            reason = line.split("aborted by:", 1)[1].strip()
            continued = reason.endswith(":") and i + 1 < len(lines)
            return f"{reason} {lines[i + 1].strip()}" if continued else reason
    return lines[0].strip() if lines else "a collective operation failed"
