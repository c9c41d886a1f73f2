"""Exploration, mistake analysis and the normalization experiment, checked against their own numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_clean_error, run_here, run_script, tiny_config

from mlp_core.analysis.ablation import ablate_normalization
from mlp_core.analysis.explore import explore
from mlp_core.analysis.mistakes import analyze_run, summarize
from mlp_core.evaluation.predictions import predict_probabilities
from mlp_core.training.loop import load_trained_model, train_and_evaluate

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out

# Published facts (../shared/data/mnist/README.md).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def png_size(path: Path) -> tuple[int, int]:
    height, width, _ = tf.io.decode_png(path.read_bytes()).shape
    return width, height


def test_explore_counts_figures_and_json(tmp_path, mnist):
    stats = explore(mnist, tmp_path)
    assert stats["train"]["label_counts"] == TRAIN_COUNTS
    assert stats["test"]["label_counts"] == TEST_COUNTS
    assert stats["train"]["balance_ratio"] == pytest.approx(6742 / 5421)
    assert (
        stats["train"]["image_shape"] == [60000, 28, 28]
        and stats["train"]["image_dtype"] == "uint8"
    )
    assert stats["train"]["unique_labels"] == list(range(10))
    assert (stats["train"]["pixel_min"], stats["train"]["pixel_max"]) == (0, 255)
    assert json.loads((tmp_path / "explore.json").read_text()) == stats
    assert png_size(tmp_path / "first25.png") == (650, 775)
    assert png_size(tmp_path / "class_balance.png") == (700, 360)


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """A small model (about 90 % accurate, so there are mistakes to study) and its analysis."""
    config = tiny_config(tmp_path_factory.mktemp("analysis"), hidden=(32,), train_subset=4096)
    run_dir = Path(train_and_evaluate(config, observers=[])["run_dir"])
    return run_dir, analyze_run(run_dir)


def test_mistake_counts_agree_with_the_predictions(analyzed, mnist):
    run_dir, numbers = analyzed
    config, model = load_trained_model(run_dir)
    predicted = predict_probabilities(model, mnist.test.images, config.normalize).argmax(1)
    errors = int((predicted != mnist.test.labels).sum())
    assert numbers["misclassified_count"] == errors > 0
    assert sum(numbers["per_digit_errors"]) == errors
    assert numbers["per_digit_count"] == TEST_COUNTS
    rates = np.array(numbers["per_digit_errors"]) / np.array(TEST_COUNTS)
    assert numbers["hardest_digit"] == int(rates.argmax())
    top = numbers["top_confusions"][0]
    assert numbers["confusion_matrix"][top["true"]][top["predicted"]] == top["count"]
    assert np.array(numbers["confusion_matrix"]).sum() == 10_000
    first = numbers["first_misclassified"]
    assert first == np.flatnonzero(predicted != mnist.test.labels)[:25].tolist()


def test_confident_mistakes_are_sorted_and_wrong():
    labels = np.array([0, 1, 2, 3])
    probabilities = np.eye(4, 10)[[1, 1, 0, 3]] * np.array([[0.6], [0.9], [0.95], [0.7]])
    numbers = summarize(labels, probabilities + (1 - probabilities.sum(1, keepdims=True)) / 10)
    assert numbers["confident_mistakes"] == [2, 0]
    assert numbers["least_confident_correct"] == [3, 1]


def test_analysis_files_agree(analyzed):
    run_dir, numbers = analyzed
    out = run_dir / "analysis"
    assert json.loads((out / "analysis.json").read_text()) == numbers
    report = (out / "report.md").read_text()
    assert f"**{numbers['misclassified_count']} of 10,000**" in report
    assert f"## The hardest digit: {numbers['hardest_digit']}" in report
    rows = re.findall(r"^\| (\d) \| (\d+) \| (\d+) \| [\d.]+ % \|$", report, flags=re.M)
    assert [int(errors) for _, _, errors in rows] == numbers["per_digit_errors"]
    for name, size in [
        ("misclassified.png", (650, 775)),
        ("confident_mistakes.png", (650, 775)),
        ("least_confident_correct.png", (650, 775)),
        ("confusion_matrix.png", (520, 460)),
        ("per_digit_errors.png", (700, 360)),
    ]:
        assert png_size(out / name) == size, name
        assert f"]({name})" in report
    assert len(list(out.glob("events.out.tfevents.*"))) == 1


def test_analyze_script_errors(tmp_path):
    assert_clean_error(run_here("analyze.py", "--run", str(tmp_path / "nope")), "does not exist")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.json").write_text(json.dumps(tiny_config(tmp_path).to_dict()))
    assert_clean_error(run_here("analyze.py", "--run", str(untrained)), "no trained model")


def test_normalization_experiment_writes_both_runs_and_the_comparison(tmp_path):
    numbers = ablate_normalization(tiny_config(tmp_path, epochs=2, summaries=False), prefix="ab")
    assert {numbers["normalized"]["status"], numbers["raw"]["status"]} <= {"completed", "diverged"}
    assert len(numbers["normalized"]["val_accuracy_per_epoch"]) == 2
    saved = json.loads((tmp_path / "logs" / "ab-comparison" / "comparison.json").read_text())
    assert saved["raw"]["run_dir"].endswith("ab-raw")
    assert (
        json.loads((tmp_path / "logs" / "ab-raw" / "config.json").read_text())["normalize"] is False
    )
    assert png_size(tmp_path / "logs" / "ab-comparison" / "comparison.png") == (1000, 380)


def test_mission_explores_trains_and_analyzes(tmp_path):
    result = run_script(
        "mission.py",
        "--epochs",
        "1",
        "--train-subset",
        "1024",
        "--hidden",
        "32",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "m",
    )
    assert result.returncode == 0, result.stderr
    assert "per-label counts [5923, 6742" in result.stdout and "test accuracy" in result.stdout
    for path in (
        "explore/explore.json",
        "m/metrics.json",
        "m/saved_model/saved_model.pb",
        "m/analysis/report.md",
    ):
        assert (tmp_path / path).is_file(), path
