"""scripts/train.py as a user runs it: end to end, and every bad input as one clear line."""
from __future__ import annotations

import json

import pytest

from conftest import assert_clean_error, run_script


def test_dry_run_end_to_end(tmp_path):
    result = run_script("train.py", "--dry-run", "--hidden", "32", "--logdir", str(tmp_path),
                        "--run-name", "smoke")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "epoch 1/1" in result.stderr
    assert "cuda" not in result.stderr.lower() and "oneDNN" not in result.stderr  # start-up noise
    metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 < metrics["test_accuracy"] <= 1.0
    assert json.loads((tmp_path / "smoke" / "config.json").read_text())["hidden"] == [32]
    again = run_script("train.py", "--dry-run", "--logdir", str(tmp_path), "--run-name", "smoke")
    assert_clean_error(again, "already exists")


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["--lr", "-0.1"], "--lr: must be a positive finite number"),
    (["--optimizer", "adagrad"], "invalid choice: 'adagrad'"),
    (["--hidden", "512,,256"], "--hidden: must be comma-separated"),
    (["--dropout", "1.5"], "--dropout: must be in [0, 1)"),
])
def test_invalid_flags_are_rejected_by_the_parser(flags, message):
    assert_clean_error(run_script("train.py", *flags), message)


def test_bad_data_dir_and_batch_size(tmp_path):
    assert_clean_error(run_script("train.py", "--data-dir", str(tmp_path / "none"), "--logdir",
                                  str(tmp_path)), "error: ", "does not exist")
    assert_clean_error(run_script("train.py", "--train-subset", "100", "--batch-size", "128",
                                  "--logdir", str(tmp_path)), "exceeds the 100 training images")
