"""Runs that are killed, interrupted, diverge or get bad input: exact resume, clear errors, no loss."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    ROOT,
    assert_clean_error,
    run_here,
    run_script,
    script_main,
    tiny_config,
    write_idx,
)

from mlp_core.config.config import Config, with_overrides
from mlp_core.core.data import FILES
from mlp_core.observers.base import Observer
from mlp_core.training.loop import load_trained_model, train_and_evaluate

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out

# 3 epochs of 32 steps, a checkpoint every 5 steps: kills land mid-epoch and between checkpoints.
SMALL_RUN = [
    "--hidden",
    "64,32",
    "--train-subset",
    "2048",
    "--batch-size",
    "64",
    "--epochs",
    "3",
    "--val-size",
    "1000",
    "--dropout",
    "0.2",
    "--checkpoint-every",
    "5",
]
TIMING_KEYS = {"wall_seconds", "train_examples_per_sec", "train_seconds", "run_dir"}


def start_train(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def without_timing(value):
    """metrics.json minus the numbers that measure time, which no two runs share."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def weights_of(run_dir: Path) -> list[np.ndarray]:
    return [v.numpy() for v in load_trained_model(run_dir)[1].trainable_variables]


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    flags = [*SMALL_RUN, "--logdir", str(tmp_path)]
    started = time.monotonic()
    reference = start_train(*flags, "--run-name", "alone")
    assert reference.wait(timeout=300) == 0, reference.communicate()
    lifetime = time.monotonic() - started
    seed = random.randrange(10**6)
    rng, run_dir, kills = random.Random(seed), tmp_path / "killed", 0
    proc = start_train(*flags, "--run-name", "killed")
    while kills < 2 and not (run_dir / "metrics.json").exists():
        time.sleep(rng.uniform(0.0, 0.9 * lifetime))  # any moment of the process's life
        if proc.poll() is not None:
            break
        proc.kill()
        proc.wait()
        kills += 1
        if not (run_dir / "metrics.json").exists():  # else it was killed after finishing
            again = ["--resume"] if (run_dir / "config.json").exists() else []
            proc = start_train(*flags, "--run-name", "killed", *again)
    _, err = proc.communicate(timeout=300)
    assert kills >= 1 and (run_dir / "metrics.json").exists(), f"seed {seed}: {err}"
    assert without_timing(metrics_of(run_dir)) == without_timing(metrics_of(tmp_path / "alone")), (
        seed
    )
    for resumed, alone in zip(weights_of(run_dir), weights_of(tmp_path / "alone")):
        np.testing.assert_array_equal(resumed, alone, err_msg=f"seed {seed}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_prints_how_to_resume_and_exits(tmp_path, signum):
    flags = [*SMALL_RUN, "--epochs", "50", "--logdir", str(tmp_path), "--run-name", "sig"]
    proc = start_train(*flags)
    wait_for(tmp_path / "sig" / "checkpoints" / "checkpoint", proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"error: stopped by {signal.Signals(signum).name} at step ")
    assert message.endswith("--run-name sig --resume")
    step = int(message.split(" at step ")[1].split(";")[0])
    assert tf.train.latest_checkpoint(str(tmp_path / "sig" / "checkpoints")).endswith(
        f"ckpt-{step}"
    )
    assert not (tmp_path / "sig" / "metrics.json").exists()


@pytest.mark.parametrize("jit", ["--no-jit", "--jit"])
def test_diverging_run_stops_keeps_last_good_checkpoint_and_says_so(tmp_path, jit):
    # lr 1e30 on raw pixels overflows float32 (and bfloat16) within a few steps, whatever the
    # random draws; a merely huge lr such as 1e6 diverges or not depending on them. The XLA step
    # applies the bad update instead of skipping it: the run must stop before any save all the same.
    result = run_script(
        "train.py",
        jit,
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--no-normalize",
        "--hidden",
        "64",
        "--train-subset",
        "2048",
        "--checkpoint-every",
        "1",
        "--steps-per-call",
        "1",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "boom",
    )
    assert_clean_error(result, "error: training diverged by step", "kept the last good checkpoint")
    assert result.returncode == 3
    metrics = metrics_of(tmp_path / "boom")
    assert metrics["status"] == "diverged" and metrics["step"] >= 1
    kept = tf.train.latest_checkpoint(str(tmp_path / "boom" / "checkpoints"))
    assert kept is not None and int(kept.rsplit("-", 1)[1]) < metrics["step"]
    assert all(np.isfinite(w).all() for w in weights_of(tmp_path / "boom"))


# --- bad input: one line naming the cause, non-zero exit, no traceback, existing runs untouched ---


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("logs")
    result = run_script(
        "train.py", "--dry-run", "--hidden", "32", "--logdir", str(logdir), "--run-name", "done"
    )
    assert result.returncode == 0, result.stderr
    return logdir / "done"


def digest(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--resume"], "already finished (status: completed)"),
        (["--hidden", "64", "--resume"], "--hidden (64,) differs from the run's (32,)"),
        ([], "run directory already exists"),
    ],
)
def test_existing_runs_are_never_overwritten(finished_run, flags, message):
    before = digest(finished_run)
    result = run_here(
        "train.py", "--dry-run", "--logdir", str(finished_run.parent), "--run-name", "done", *flags
    )
    assert_clean_error(result, message)
    assert digest(finished_run) == before


def test_resume_of_a_missing_run(tmp_path):
    result = run_here("train.py", "--logdir", str(tmp_path), "--run-name", "ghost", "--resume")
    assert_clean_error(result, "ghost: run directory does not exist")
    assert_clean_error(run_here("train.py", "--resume"), "--resume needs the --run-name")


def test_logdir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_here("train.py", "--dry-run", "--logdir", str(blocker / "logs"))
    assert_clean_error(result, "cannot write the run directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_logdir_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_here("train.py", "--dry-run", "--logdir", str(locked))
    assert_clean_error(result, "cannot write the run directory", "Permission denied")


def corrupt(directory: Path, kind: str) -> str:
    """Spoil one file of a good IDX directory; return the name the error must mention."""
    name = FILES["train_images"] + ".gz"
    path = directory / name
    if kind == "truncated":
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    elif kind == "not gzip":
        path.write_bytes(b"\x1f\x8b" + os.urandom(64))
    elif kind == "mismatched":
        labels = np.zeros(599, np.uint8)
        name = write_idx(directory / FILES["train_labels"], labels).name
    return name


@pytest.mark.parametrize("kind", ["truncated", "not gzip", "mismatched"])
def test_bad_data_files(tmp_path, small_idx_dir, kind):
    name = corrupt(small_idx_dir, kind)
    result = run_here(
        "train.py",
        "--data-dir",
        str(small_idx_dir),
        "--val-size",
        "100",
        "--batch-size",
        "50",
        "--logdir",
        str(tmp_path / "logs"),
    )
    assert_clean_error(result, name)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()


class Crash(Exception):
    pass


class CrashAt(Observer):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, ctx, step, loss):
        if step >= self.step:
            raise Crash


@pytest.mark.parametrize(
    "device, fast",
    [
        (None, dict(steps_per_call=1, data_on_device=False)),
        ("/CPU:0", dict(steps_per_call=1, data_on_device=False)),
        (None, dict(steps_per_call=3, data_on_device=False)),
        # With a weight average too: it is saved, restored and handed on with the rest.
        (None, dict(steps_per_call=4, data_on_device=True, jit_compile=True, ema_decay=0.9)),
    ],
)
def test_resume_is_exact_on_every_input_path(tmp_path, device, fast):
    """A device-prefetch iterator cannot be checkpointed and is rebuilt at the saved step; data on
    the device needs no iterator; calls of several steps checkpoint when they pass a multiple."""
    config = tiny_config(tmp_path, checkpoint_every=5, epochs=2, **fast)
    alone = train_and_evaluate(with_overrides(config, run_name="alone"), device, observers=[])
    crashed = with_overrides(config, run_name="crashed")
    with pytest.raises(Crash):
        train_and_evaluate(crashed, device, observers=[CrashAt(23)])  # mid-epoch 2, saved at 20
    resumed = train_and_evaluate(crashed, device, observers=[], resume=True)
    assert without_timing(resumed) == without_timing(alone)
    for a, b in zip(
        weights_of(tmp_path / "logs" / "crashed"), weights_of(tmp_path / "logs" / "alone")
    ):
        np.testing.assert_array_equal(a, b)


# --- damaged checkpoints, a second process on a live run, names that leave the logdir ---


def flip_bytes(checkpoint: Path) -> None:
    """Damage every tensor of a checkpoint's data file the way a bad disk does: bytes flipped."""
    for data in checkpoint.parent.glob(f"{checkpoint.name}.data-*"):
        raw = bytearray(data.read_bytes())
        for i in range(0, len(raw), 61):
            raw[i] ^= 0xFF
        data.write_bytes(bytes(raw))


def checkpoints_of(run_dir: Path) -> list[Path]:
    from mlp_core.training.checkpointing import saved_checkpoints

    return [Path(p) for p in saved_checkpoints(run_dir / "checkpoints")]


def test_resume_skips_a_corrupt_newest_checkpoint_and_still_finishes_bit_identical(tmp_path, capfd):
    config = tiny_config(tmp_path, checkpoint_every=5, epochs=2, steps_per_call=1)
    alone = train_and_evaluate(with_overrides(config, run_name="alone"), observers=[])
    crashed = with_overrides(config, run_name="crashed")
    with pytest.raises(Crash):
        train_and_evaluate(crashed, observers=[CrashAt(23)])  # kept: ckpt-15, ckpt-16, ckpt-20
    newest, older = checkpoints_of(tmp_path / "logs" / "crashed")[:2]
    assert (newest.name, older.name) == ("ckpt-20", "ckpt-16")
    flip_bytes(newest)
    capfd.readouterr()
    resumed = train_and_evaluate(crashed, observers=[], resume=True)
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert (
        len(warnings) == 1 and "skipped ckpt-20" in warnings[0] and "trying ckpt-16" in warnings[0]
    )
    assert without_timing(resumed) == without_timing(alone)
    for a, b in zip(
        weights_of(tmp_path / "logs" / "crashed"), weights_of(tmp_path / "logs" / "alone")
    ):
        np.testing.assert_array_equal(a, b)


def test_no_checkpoint_restores_one_error_line_and_nothing_deleted(tmp_path, capfd):
    from mlp_core.analysis.mistakes import analyze_run
    from mlp_core.core.errors import UserError

    config = tiny_config(tmp_path, epochs=1, checkpoint_every=5, steps_per_call=1, run_name="bad")
    with pytest.raises(Crash):
        train_and_evaluate(config, observers=[CrashAt(16)])  # killed after ckpt-15
    run_dir = tmp_path / "logs" / "bad"
    kept = checkpoints_of(run_dir)
    assert [c.name for c in kept] == ["ckpt-15", "ckpt-10", "ckpt-5"]
    flip_bytes(kept[0])
    capfd.readouterr()
    assert script_main("export.py")(["--run", str(run_dir), "--out", str(tmp_path / "older")]) == 0
    assert "skipped ckpt-15" in capfd.readouterr().err and (tmp_path / "older").is_dir()
    for checkpoint in kept[1:]:
        flip_bytes(checkpoint)
    before = digest(run_dir)
    with pytest.raises(UserError, match="none of the 3 checkpoints restores"):
        analyze_run(run_dir)
    result = run_here(
        "train.py", "--logdir", str(tmp_path / "logs"), "--run-name", "bad", "--resume"
    )
    assert_clean_error(
        result, "none of the 3 checkpoints restores (ckpt-15, ckpt-10, ckpt-5); nothing was deleted"
    )
    assert result.returncode == 2
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    after = digest(run_dir)
    assert after.pop(".lock") and {k: v for k, v in before.items() if k != ".lock"} == after


def test_a_run_in_use_is_refused_naming_its_process_and_kill_9_leaves_no_stale_lock(tmp_path):
    from mlp_core.config.config import Config
    from mlp_core.core.errors import UserError
    from mlp_core.training.rundir import config_for_resume

    flags = [*SMALL_RUN, "--epochs", "50", "--logdir", str(tmp_path), "--run-name", "live"]
    first, export = start_train(*flags), script_main("export.py")
    try:
        wait_for(tmp_path / "live" / "checkpoints" / "checkpoint", first)
        config = config_for_resume(Config(logdir=str(tmp_path), run_name="live"), set())
        with pytest.raises(UserError, match=f"live: in use by process {first.pid} "):
            train_and_evaluate(config, observers=[], resume=True)
        with pytest.raises(UserError, match=f"live: in use by process {first.pid} "):
            export(["--run", str(tmp_path / "live")])
        assert first.poll() is None  # the first trainer goes on undisturbed
    finally:
        first.kill()
        first.wait()
    assert not (tmp_path / "live" / "saved_model").exists()
    assert export(["--run", str(tmp_path / "live")]) == 0  # the killed process's lock went with it
    assert (tmp_path / "live" / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.parametrize(
    "name, message",
    [
        ("../../escaped", "one plain directory name"),
        ("a/b", "one plain directory name"),
        ("/tmp/abs", "one plain directory name"),
        ("..", "must not start with '.'"),
        (".hidden", "must not start with '.'"),
    ],
)
def test_a_run_name_must_be_one_plain_directory_name(tmp_path, capsys, name, message):
    logdir = tmp_path / "deep" / "logs"
    with pytest.raises(SystemExit) as exit_:
        script_main("train.py")(["--dry-run", "--logdir", str(logdir), f"--run-name={name}"])
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2 and err.startswith("error: argument --run-name: ") and message in err
    )
    assert len(err.strip().splitlines()) == 1
    assert not any(tmp_path.rglob("*")), "nothing may be created"


def test_run_names_are_checked_wherever_a_run_is_opened(tmp_path):
    from mlp_core.core.errors import UserError
    from mlp_core.training.rundir import config_for_resume, create_run_dir, open_run_dir

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.json").write_text(tiny_config(tmp_path).to_json())
    config = tiny_config(tmp_path, logdir=str(tmp_path / "logs"), run_name="../outside")
    for opener in (create_run_dir, open_run_dir, lambda c: config_for_resume(c, set())):
        with pytest.raises(UserError, match="--run-name must be one plain directory name"):
            opener(config)
    with pytest.raises(UserError, match="must not start with '.' or '-'"):
        create_run_dir(with_overrides(config, run_name="-x"))
    assert not (tmp_path / "logs").exists()


# --- a checkpoint that lacks a part the run expects (or holds one it would drop) ---


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory) -> dict[str, Config]:
    """Two runs killed after ckpt-5: one plain (momentum, float32), one that keeps a weight
    average."""
    tmp_path = tmp_path_factory.mktemp("stopped")
    plain = tiny_config(
        tmp_path,
        epochs=1,
        checkpoint_every=5,
        steps_per_call=1,
        data_on_device=False,
        jit_compile=False,
        precision="float32",
        optimizer="momentum",
        run_name="plain",
    )
    runs = {"plain": plain, "averaged": with_overrides(plain, ema_decay=0.9, run_name="averaged")}
    for config in runs.values():
        with pytest.raises(Crash):
            train_and_evaluate(config, observers=[CrashAt(7)])
    return runs


@pytest.mark.parametrize(
    "run, changes, fragments",
    [
        ("plain", dict(ema_decay=0.9), ("has no ema_model", "without --ema-decay")),
        (
            "plain",
            dict(precision="mixed_float16"),
            ("lacks variables this run has (loss_scale/", "without --precision mixed_float16"),
        ),
        ("averaged", dict(ema_decay=0.0), ("holds ema_model", "with --ema-decay")),
        ("plain", dict(optimizer="adam"), ("lacks variables this run has",)),  # no Adam slots
    ],
)
def test_resume_refuses_a_checkpoint_that_does_not_match_the_run(
    stopped_runs, tmp_path, run, changes, fragments
):
    from mlp_core.core.errors import UserError

    config = copy_of(stopped_runs[run], tmp_path, **changes)
    with pytest.raises(UserError) as refused:
        train_and_evaluate(config, observers=[], resume=True)
    message = str(refused.value)
    assert refused.value.exit_code == 2 and len(message.splitlines()) == 1
    assert message.startswith(f"checkpoint {tmp_dir(config)}/checkpoints/ckpt-5 ")
    for fragment in fragments:
        assert fragment in message, message


def tmp_dir(config: Config) -> Path:
    return Path(config.logdir) / str(config.run_name)


def copy_of(config: Config, tmp_path: Path, **changes) -> Config:
    """A copy of a stopped run under `tmp_path`, and its config with `changes`: each test
    resumes its own copy, since a resume that goes through finishes the run."""
    shutil.copytree(tmp_dir(config), tmp_path / "copy", ignore=shutil.ignore_patterns(".lock"))
    return with_overrides(config, logdir=str(tmp_path), run_name="copy", **changes)


def test_a_run_whose_config_gained_a_weight_average_is_refused_not_restored_silently(
    stopped_runs, tmp_path
):
    """The command line refuses changed flags on --resume, but config.json can be edited: the
    evaluated model would then be an average that was never trained."""
    config = copy_of(stopped_runs["plain"], tmp_path, ema_decay=0.9)
    run_dir = tmp_dir(config)
    (run_dir / "config.json").write_text(config.to_json())
    before = digest(run_dir)
    result = run_here("train.py", "--logdir", str(tmp_path), "--run-name", "copy", "--resume")
    assert_clean_error(result, "ckpt-5 has no ema_model", "--ema-decay")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and errors == [result.stderr.strip().splitlines()[-1]]
    after = digest(run_dir)
    assert after.pop(".lock") is not None and after == before
    with pytest.raises(Exception, match="has no ema_model"):
        load_trained_model(run_dir)
