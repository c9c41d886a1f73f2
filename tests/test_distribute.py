"""tf.distribute: replicas on logical CPUs and worker processes train exactly like one device."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, assert_clean_error, run_here, run_script, tiny_config
from test_reliability import without_timing

from mlp_core.config.config import Config, parse_config, with_overrides
from mlp_core.core.errors import UserError
from mlp_core.core.pipeline import train_dataset
from mlp_core.distribute.replicas import replica_batches
from mlp_core.distribute.strategy import check_tf_config, make_strategy
from mlp_core.observers.base import Observer
from mlp_core.training.loop import load_trained_model, train_and_evaluate

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out

# Momentum SGD and an L2 penalty: unlike Adam's, their updates scale with the gradient, so a wrongly
# averaged loss or penalty shows in the weights. No dropout: each replica draws its own masks.
# float32: strategies run the plain step, while one device would pick bfloat16 on a CPU that has it.
FLAGS = [
    "--hidden",
    "64,32",
    "--train-subset",
    "1024",
    "--batch-size",
    "64",
    "--epochs",
    "1",
    "--val-size",
    "1000",
    "--dropout",
    "0",
    "--optimizer",
    "momentum",
    "--lr",
    "0.05",
    "--l2",
    "0.001",
    "--precision",
    "float32",
]
HELPER = ROOT / "tests" / "train_and_dump.py"


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> tuple[dict, list[np.ndarray]]:
    """The reference: the same flags on one device, in this process."""
    logdir = tmp_path_factory.mktemp("one")
    metrics = train_and_evaluate(
        parse_config([*FLAGS, "--logdir", str(logdir), "--run-name", "one"])
    )
    return metrics, [v.numpy() for v in load_trained_model(logdir / "one")[1].trainable_variables]


def start_helper(out: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.Popen(
        [sys.executable, str(HELPER), str(out), *FLAGS, *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Whatever happened, no worker outlives its test."""
    for proc in procs:
        proc.kill()
        proc.wait()


def weights(dump) -> list[np.ndarray]:
    """The dumped trainable variables, in the model's order."""
    return [dump[f"w{i}"] for i in range(sum(key.startswith("w") for key in dump.files))]


def assert_matches_one_device(run_dir: Path, dump, one_device) -> None:
    """Within float tolerance: a wrong share of the loss or gradient would be off by ~1e-2."""
    reference, reference_weights = one_device
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss"):
        assert metrics[key] == pytest.approx(reference[key], rel=1e-5), key
    assert metrics["test_accuracy"] == pytest.approx(reference["test_accuracy"], abs=2e-4)
    for got, want in zip(weights(dump), reference_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path, one_device):
    proc = start_helper(
        tmp_path / "dump.npz",
        "--strategy",
        "mirrored",
        "--logical-cpus",
        "2",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "mirrored",
    )
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        stop_all([proc])
    assert proc.returncode == 0, err
    dump = np.load(tmp_path / "dump.npz")
    assert dump["replicas"] == 2 and dump["traces"] == 1 and dump["copies_equal"]
    assert_matches_one_device(tmp_path / "mirrored", dump, one_device)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_cluster(
    tmp_path: Path, *flags: str, logdirs: tuple[str, str] = ("logs", "logs")
) -> list[subprocess.Popen]:
    """Two worker processes on free 127.0.0.1 ports, each with its own TMPDIR."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    procs = []
    for index in range(2):
        (tmp_path / f"tmp{index}").mkdir(exist_ok=True)
        env = {
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "TMPDIR": str(tmp_path / f"tmp{index}"),
        }
        procs.append(
            start_helper(
                tmp_path / f"worker{index}.npz",
                "--strategy",
                "multi_worker",
                "--logdir",
                str(tmp_path / logdirs[index]),
                "--run-name",
                "cluster",
                *flags,
                env=env,
            )
        )
    return procs


def finish(procs: list[subprocess.Popen]) -> list[str]:
    """Wait (at most two minutes) for every worker; their stderr."""
    try:
        return [proc.communicate(timeout=120)[1] for proc in procs]
    finally:
        stop_all(procs)


def test_two_workers_finish_with_identical_weights(tmp_path, one_device):
    procs = start_cluster(tmp_path)
    errors = finish(procs)
    assert [proc.returncode for proc in procs] == [0, 0], errors
    dumps = [np.load(tmp_path / f"worker{index}.npz") for index in range(2)]
    assert [int(d["replicas"]) for d in dumps] == [2, 2]
    for chief, other in zip(weights(dumps[0]), weights(dumps[1]), strict=True):
        np.testing.assert_array_equal(chief, other)
    run_dir = tmp_path / "logs" / "cluster"
    assert_matches_one_device(run_dir, dumps[0], one_device)
    # Only the chief wrote the run directory; the other worker's checkpoints went to its TMPDIR.
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock",
        "checkpoints",
        "config.json",
        "metrics.json",
    ]  # .lock: the chief held the run
    assert list((tmp_path / "tmp1").iterdir()) == []


def test_a_worker_that_dies_stops_the_other_and_both_resume_together(tmp_path):
    flags = ("--epochs", "8", "--checkpoint-every", "5")
    procs = start_cluster(tmp_path, *flags)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "logs" / "cluster" / "checkpoints" / "checkpoint").exists():
            assert procs[0].poll() is None, "the chief exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGKILL)  # the chief: with it goes the cluster's coordinator
        _, err = procs[1].communicate(timeout=90)
    finally:
        stop_all(procs)
    assert procs[1].returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: lost contact with another worker (")
    assert "--run-name cluster --resume" in err
    assert not (tmp_path / "logs" / "cluster" / "metrics.json").exists()
    # A worker that cannot see the chief's checkpoints must not silently start over.
    shutil.copytree(
        tmp_path / "logs" / "cluster",
        tmp_path / "blind" / "cluster",
        ignore=shutil.ignore_patterns("checkpoints"),
    )
    procs = start_cluster(tmp_path, *flags, "--resume", logdirs=("logs", "blind"))
    errors = finish(procs)
    assert [proc.returncode for proc in procs] == [2, 2], errors
    for err in errors:
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith("error: the workers would start from different steps")
        )
    procs = start_cluster(tmp_path, *flags, "--resume")
    errors = finish(procs)
    assert [proc.returncode for proc in procs] == [0, 0], errors
    assert json.loads((tmp_path / "logs" / "cluster" / "metrics.json").read_text())["epochs"] == 8
    chief, other = (weights(np.load(tmp_path / f"worker{index}.npz")) for index in range(2))
    for chief_weight, other_weight in zip(chief, other, strict=True):
        np.testing.assert_array_equal(chief_weight, other_weight)


class StopAt(Observer):
    """Ends the process's work abruptly after step `step`, like a kill -9 (no checkpoint)."""

    class Killed(Exception):
        pass

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, ctx, step, loss):
        if step == self.step:
            raise self.Killed


def test_a_mirrored_run_resumes_exactly_mid_epoch(tmp_path):
    """Distributed iterators are not saved: the stream is rebuilt at the checkpoint's step."""
    config = tiny_config(
        tmp_path, strategy="mirrored", train_subset=256, checkpoint_every=3, ema_decay=0.9
    )
    alone = train_and_evaluate(config)
    stopped = with_overrides(config, run_name="stopped")
    with pytest.raises(StopAt.Killed):
        train_and_evaluate(stopped, observers=[StopAt(4)])  # the last checkpoint is ckpt-3
    assert tf.train.latest_checkpoint(str(tmp_path / "logs" / "stopped" / "checkpoints")).endswith(
        "-3"
    )
    assert without_timing(train_and_evaluate(stopped, resume=True)) == without_timing(alone)


def test_each_replica_takes_a_contiguous_slice_of_the_global_batch(mnist):
    """Four replicas on two workers see exactly the one-device batches, resumed mid-stream too."""
    split = mnist.train.take(0, 512)
    whole = list(train_dataset(split, 64, seed=5, start_epoch=1, skip_batches=3).take(7))
    workers = [
        list(
            replica_batches(
                split,
                64,
                seed=5,
                start_epoch=1,
                skip_batches=3,
                replicas=4,
                local_replicas=range(first, first + 2),
            ).take(14)
        )
        for first in (0, 2)
    ]
    for step, (images, labels) in enumerate(whole):
        slices = [batch for worker in workers for batch in worker[2 * step : 2 * step + 2]]
        assert [s[0].shape[0] for s in slices] == [16] * 4
        np.testing.assert_array_equal(np.concatenate([s[0] for s in slices]), images)
        np.testing.assert_array_equal(np.concatenate([s[1] for s in slices]), labels)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{cluster", "TF_CONFIG is not valid JSON"),
        (
            '{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
            'a list of "host:port"',
        ),
        (
            '{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
            "host:port",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            "task must name this process",
        ),
        ('{"cluster": {"worker": ["a:1"]}}', "task must name this process"),
    ],
)
def test_bad_tf_config_is_one_clear_line(tf_config, message):
    with pytest.raises(UserError, match=message):
        check_tf_config(tf_config)


def test_multi_worker_without_tf_config_or_run_name(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = run_here("train.py", "--strategy", "multi_worker", "--logdir", str(tmp_path))
    assert_clean_error(
        result, "error: --strategy multi_worker needs the TF_CONFIG environment variable"
    )
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}
        ),
    )
    with pytest.raises(UserError, match="--strategy multi_worker needs --run-name"):
        make_strategy(Config(strategy="multi_worker"))


def test_global_batch_must_divide_among_replicas(tmp_path):
    result = run_script(
        "train.py",
        "--strategy",
        "mirrored",
        "--logical-cpus",
        "3",
        "--dry-run",
        "--batch-size",
        "64",
        "--logdir",
        str(tmp_path),
    )
    assert_clean_error(
        result,
        "error: --batch-size 64 is the global batch and must divide evenly "
        "among the 3 replicas of --strategy mirrored",
    )
    assert not any(tmp_path.iterdir())


def test_logical_cpus_cannot_be_split_once_tensorflow_runs():
    tf.config.list_logical_devices("CPU")  # this process's devices are set up now, if not before
    with pytest.raises(
        UserError, match="--logical-cpus 3: TensorFlow has already set up its devices"
    ):
        make_strategy(Config(strategy="mirrored", logical_cpus=3))


@pytest.mark.parametrize(
    "flags, message",
    [(["--strategy", "tpu"], "invalid choice: 'tpu'"), (["--logical-cpus", "-1"], "must be >= 0")],
)
def test_strategy_flags_are_validated(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(flags)
    assert message in capsys.readouterr().err
    assert parse_config(["--strategy", "mirrored", "--logical-cpus", "2"]).logical_cpus == 2


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1] if err.strip() else ""


def test_sigterm_to_one_worker_stops_both_at_one_step_and_they_resume_exactly(tmp_path):
    """Both workers save the same step and stop; restarted, they finish like a run left alone."""
    flags = ("--epochs", "8", "--checkpoint-every", "5")  # 128 steps
    for run in ("alone", "stopped"):
        (tmp_path / run).mkdir()
    alone = start_cluster(tmp_path / "alone", *flags)
    stopped = start_cluster(tmp_path / "stopped", *flags)
    try:
        wait_for_checkpoint(tmp_path / "stopped", stopped)
        stopped[1].send_signal(signal.SIGTERM)  # not the chief
        errors = [proc.communicate(timeout=90)[1] for proc in stopped]
    finally:
        stop_all(stopped)
    assert [proc.returncode for proc in stopped] == [143, 143], errors
    assert all("Traceback" not in err for err in errors), errors
    chief, signalled = (last_line(err) for err in errors)
    assert signalled.startswith("error: stopped by SIGTERM at step "), signalled
    step = int(signalled.split(" at step ")[1].split(";")[0])
    assert chief.startswith(f"error: stopped at step {step} because another worker was stopped")
    run_dir = tmp_path / "stopped" / "logs" / "cluster"
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith(f"ckpt-{step}")
    assert 0 < step < 128 and not (run_dir / "metrics.json").exists()
    resumed = start_cluster(tmp_path / "stopped", *flags, "--resume")
    for procs in (alone, resumed):
        errors = finish(procs)
        assert [proc.returncode for proc in procs] == [0, 0], errors
    metrics = [
        json.loads((tmp_path / run / "logs" / "cluster" / "metrics.json").read_text())
        for run in ("alone", "stopped")
    ]
    assert without_timing(metrics[0]) == without_timing(metrics[1])
    for index in range(2):
        got, want = (np.load(tmp_path / run / f"worker{index}.npz") for run in ("stopped", "alone"))
        for a, b in zip(weights(got), weights(want), strict=True):
            np.testing.assert_array_equal(a, b)


def wait_for_checkpoint(
    tmp_path: Path, procs: list[subprocess.Popen], timeout: float = 120
) -> None:
    """Until the chief has written its first checkpoint, while both workers still run."""
    deadline = time.monotonic() + timeout
    while not (tmp_path / "logs" / "cluster" / "checkpoints" / "checkpoint").exists():
        assert all(proc.poll() is None for proc in procs), "a worker exited before the checkpoint"
        assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
        time.sleep(0.05)
