"""scripts/sweep.py: a tiny seeded sweep, what the real TensorBoard's HParams plugin makes of it,
kill and resume, a diverging trial, and the bad inputs refused before any trial runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import ROOT, assert_clean_error, run_here, run_script, tensorboard_server

from mlp_core.sweep.space import parse_space
from mlp_core.sweep.study import SweepSpec
from mlp_core.sweep.workers import run_worker

TINY = ["--train-subset", "2048", "--epochs", "1", "--hidden", "64", "--val-size", "1000"]
SPACE = [
    "--param",
    "lr=log:1e-3:1e-2",
    "--param",
    "dropout=0:0.5",
    "--param",
    "hidden=choice:64|128,64",
]


def load(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'study.db'}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """3 trials of 1 epoch on 2,048 images, in two worker processes on one SQLite study."""
    logdir = tmp_path_factory.mktemp("sweep") / "logs"
    args = [*SPACE, "--trials", "3", "--workers", "2", *TINY, "--logdir", str(logdir)]
    result = run_script("sweep.py", *args, "--run-name", "tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, logdir / "tiny"


@pytest.mark.slow
def test_tiny_sweep_finishes_exactly_three_trials_and_reports_them(tiny_sweep):
    result, sweep_dir = tiny_sweep
    study = load(sweep_dir, "tiny")
    assert states(study) == ["COMPLETE"] * 3  # two workers, and not one trial more
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3
    lines = result.stdout.splitlines()
    progress = [re.findall(r"\d+", line)[:5] for line in lines if line.startswith("trials: ")]
    assert progress[-1] == ["3", "3", "0", "0", "0"]  # done/requested, pruned, running, left
    head = next(i for i, line in enumerate(lines) if line.startswith("trial "))
    table = lines[head + 1 : head + 4]
    ranked = [float(row.split()[3]) for row in table]
    assert ranked == sorted(ranked, reverse=True)
    assert ranked[0] == pytest.approx(100 * study.best_value, abs=0.005)
    command = next(line for line in lines if "scripts/train.py" in line).split()
    assert command[command.index("--val-size") + 1] == "0" and "--train-subset" not in command
    assert float(command[command.index("--lr") + 1]) == study.best_params["lr"]
    png = sweep_dir / "hparams_vs_val_accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def experiment(base: str, seconds: float = 60) -> dict:
    """The hparams plugin's experiment, once the server has loaded the sweep's event files."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = post(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
            if found.get("hparamInfos"):
                return found
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the hparams plugin found no experiment")


@pytest.mark.slow
def test_hparams_plugin_serves_the_domains_and_three_session_groups(tiny_sweep):
    _, sweep_dir = tiny_sweep
    study = load(sweep_dir, "tiny")
    with tensorboard_server(sweep_dir) as base:
        infos = {h["name"]: h for h in experiment(base)["hparamInfos"]}
        statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
        request = {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0}
        groups = post(f"{base}/plugin/hparams/session_groups", {**request, "sliceSize": 100})
    assert set(infos) == {"lr", "dropout", "hidden"}  # the sweep's columns, not every field's
    assert infos["lr"]["domainInterval"] == {"minValue": 1e-3, "maxValue": 1e-2}
    assert infos["dropout"]["domainInterval"] == {"minValue": 0.0, "maxValue": 0.5}
    assert sorted(infos["hidden"]["domainDiscrete"]) == ["[128, 64]", "[64]"]
    assert groups["totalSize"] == 3
    for group in groups["sessionGroups"]:
        (session,) = group["sessions"]
        trial = study.trials[int(session["name"].split("-")[1])]
        metrics = {
            (m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]
        }
        assert session["status"] == "STATUS_SUCCESS"
        assert group["hparams"]["lr"] == pytest.approx(trial.params["lr"])
        assert metrics[("validation", "accuracy")] == pytest.approx(trial.value, abs=1e-6)
        assert 0.1 < metrics[("test", "accuracy")] <= 1 and metrics[("validation", "loss")] > 0
        assert metrics[("sweep", "wall_seconds")] > 0 and metrics[("sweep", "pruned")] == 0
        assert metrics[("sweep", "train_examples_per_sec")] > 100


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_cut_trial_and_stops_at_the_requested_number(tmp_path):
    """SIGKILL during trial 1 (after its first epoch's checkpoint); the same command again
    resumes it from that checkpoint and draws only the one trial still missing."""
    quick = [*TINY, "--epochs", "2", "--train-subset", "1024", "--no-summaries"]
    args = [*SPACE[:2], "--trials", "3", *quick, "--logdir", str(tmp_path)]
    command = [sys.executable, str(ROOT / "scripts" / "sweep.py"), *args]
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any((sweep_dir / "trial-001" / "checkpoints").glob("*.index")):
            assert process.poll() is None and time.monotonic() < deadline, "never reached trial 1"
            time.sleep(0.2)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert states(load(sweep_dir, "sweep"))[:2] == ["COMPLETE", "RUNNING"]
    result = run_script("sweep.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming 1 cut" in result.stdout
    study = load(sweep_dir, "sweep")
    assert states(study) == ["COMPLETE"] * 3
    # The rerun's sampler does not draw trial 0's values again for trial 2.
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3
    history = json.loads((sweep_dir / "trial-001" / "metrics.json").read_text())["history"]
    # Epoch 1 comes from before the kill: it was not trained again.
    assert [h["epoch"] for h in history] == [1, 2]
    assert sorted(study.trials[1].intermediate_values) == [1, 2]


def test_a_diverging_trial_is_pruned_and_the_sweep_goes_on(tmp_path):
    """Two trials at a learning rate no MLP survives: each is pruned, none stops the worker."""
    space = tuple(parse_space(["lr=choice:1e9"]))
    fixed = (
        "--optimizer",
        "sgd",
        "--train-subset",
        "1024",
        "--epochs",
        "1",
        "--hidden",
        "32",
        "--no-summaries",
    )
    spec = SweepSpec(
        space, (*fixed, "--val-size", "500"), 2, "random", True,
        f"sqlite:///{tmp_path / 'study.db'}", "diverge", str(tmp_path), 0,
    )  # fmt: skip
    run_worker(spec)
    study = load(tmp_path, "diverge")
    assert states(study) == ["PRUNED", "PRUNED"]
    assert all("diverged" in t.user_attrs for t in study.trials)
    assert pruned_scalar(tmp_path / "trial-000" / "sweep") == 1.0


def pruned_scalar(run: Path) -> float:
    """The `pruned` value a trial wrote for the dashboard, read back from its event file."""
    import tensorflow as tf

    for path in run.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "pruned":
                    return float(np.asarray(tf.make_ndarray(value.tensor)))
    raise AssertionError(f"no pruned scalar in {run}")


@pytest.mark.parametrize(
    "param, fragment",
    [
        ("colour=0:1", "'colour'"),
        ("lr=1e-3", "lo:hi"),
        ("lr=log:0:1e-2", "lo > 0"),
        ("dropout=0:1.5", "--dropout"),
        ("hidden=choice:64|-3", "--hidden"),
        ("epochs=1:2.5", "integers"),
    ],
)
def test_bad_domains_are_one_line_errors(param, fragment, tmp_path):
    result = run_here("sweep.py", "--param", param, "--logdir", str(tmp_path))
    assert result.returncode == 2
    assert_clean_error(result, "error: ", fragment)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # refused before a directory or study was made


def test_a_storage_that_cannot_be_opened_is_one_line_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'study.db'}"
    result = run_here(
        "sweep.py", "--param", "lr=1e-3:1e-2", "--storage", url, "--logdir", str(tmp_path)
    )
    assert result.returncode == 2
    assert_clean_error(result, f"--storage {url}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("trial-*"))
