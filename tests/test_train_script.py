"""scripts/train.py as a user runs it: end to end, and every bad input as one clear line."""

from __future__ import annotations

import io
import json
import sys

import pytest
from conftest import ROOT, assert_clean_error, run_here, run_script

from mlp_core.training import console

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out


def test_dry_run_end_to_end(tmp_path):
    result = run_script(
        "train.py", "--dry-run", "--hidden", "32", "--logdir", str(tmp_path), "--run-name", "smoke"
    )
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "epoch 1/1" in result.stderr
    assert " val acc 0." in result.stderr and "1 epoch in" in result.stdout  # the console line
    assert "cuda" not in result.stderr.lower() and "oneDNN" not in result.stderr  # start-up noise
    metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 < metrics["test_accuracy"] <= 1.0
    assert json.loads((tmp_path / "smoke" / "config.json").read_text())["hidden"] == [32]
    again = run_here("train.py", "--dry-run", "--logdir", str(tmp_path), "--run-name", "smoke")
    assert_clean_error(again, "already exists")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "--batch-size: must be a positive integer"),
        (["--lr", "-0.1"], "--lr: must be a positive finite number"),
        (["--optimizer", "adagrad"], "invalid choice: 'adagrad'"),
        (["--hidden", "512,,256"], "--hidden: must be comma-separated"),
        (["--dropout", "1.5"], "--dropout: must be in [0, 1)"),
    ],
)
def test_invalid_flags_are_rejected_by_the_parser(flags, message, capsys):
    from test_reliability import script_main  # in this process: no TensorFlow start-up per case

    with pytest.raises(SystemExit) as exit_:
        script_main("train.py")(flags)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_bad_data_dir_and_batch_size(tmp_path):
    assert_clean_error(
        run_here("train.py", "--data-dir", str(tmp_path / "none"), "--logdir", str(tmp_path)),
        "error: ",
        "does not exist",
    )
    assert_clean_error(
        run_here(
            "train.py", "--train-subset", "100", "--batch-size", "128", "--logdir", str(tmp_path)
        ),
        "exceeds the 100 training images",
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_line_shows_the_time_left_then_val_acc(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(console.time, "perf_counter", lambda: now[0])
    screen = Terminal()
    bar = console.ProgressBar(2, 5, steps=400, batch_size=100, stream=screen)
    now[0] += 10.0  # 100 of 400 steps in 10 s: 300 left at 0.1 s each
    bar.draw(100, loss=0.5, accuracy=0.9)
    assert screen.getvalue().endswith("100/400  loss 0.5000  acc 0.9000  1,000 ex/s  eta 0:30")
    now[0] += 30.0
    bar.finish(loss=0.25, accuracy=0.95, val_accuracy=0.9723)
    last = screen.getvalue().rsplit("\r", 1)[1]
    assert last.endswith("400/400  loss 0.2500  acc 0.9500  1,000 ex/s  40.0 s  val acc 0.9723\n")
    assert "eta" not in last
    piped = io.StringIO()  # not a terminal: one line per epoch, no eta
    bar = console.ProgressBar(1, 1, steps=10, batch_size=1, stream=piped)
    bar.draw(5, 1.0, 0.5)
    bar.finish(1.0, 0.5)
    assert piped.getvalue().count("\n") == 1 and "eta" not in piped.getvalue()
    metrics = dict(
        test_accuracy=0.97,
        test_loss=0.1,
        epochs=1,
        wall_seconds=9.0,
        train_examples_per_sec=5000.0,
        run_dir="logs/x",
    )
    assert "\n1 epoch in 9.0 s" in console.summary(metrics)
    assert "\n3 epochs in 9.0 s" in console.summary({**metrics, "epochs": 3})


BAD_FLAGS = [
    ("train.py", ["--lr", "-0.1"]),
    ("train.py", ["--no-such-flag"]),
    ("mission.py", ["--epochs", "0"]),
    ("ablate_normalization.py", ["--optimizer", "adagrad"]),
    ("analyze.py", []),
    ("export.py", ["--run"]),
    ("predict.py", ["--model", "m"]),
    ("explore.py", ["--out"]),
    ("benchmark.py", ["--batch-sizes", "0"]),
    ("ablate_imbalance.py", ["--digit", "12"]),
    ("augment_cost.py", ["--augment", "sideways"]),
    ("summary_cost.py", ["--epochs", "0"]),
    ("render_docs.py", ["--no-such-flag"]),
    ("sweep.py", ["--trials", "0"]),
]


@pytest.mark.parametrize("script, flags", BAD_FLAGS)
def test_a_bad_flag_is_one_error_line_and_a_pointer_to_help(capsys, monkeypatch, script, flags):
    from test_reliability import script_main

    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / script)])  # argparse's prog
    with pytest.raises(SystemExit) as exit_:
        script_main(script)(flags)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.startswith("error: ") and err.endswith(f"(see {script} --help)\n"), err
    assert err.count("\n") == 1 and "usage:" not in err


def test_every_script_is_checked_for_one_line_flag_errors():
    checked = {script for script, _ in BAD_FLAGS}
    assert checked == {path.name for path in (ROOT / "scripts").glob("*.py")}


def test_a_bad_flag_exits_2_from_the_command_line():
    result = run_script("train.py", "--batch-size", "0")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: argument --batch-size: must be a positive integer, got '0' (see train.py --help)\n"
    )
