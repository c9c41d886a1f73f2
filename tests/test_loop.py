"""The compiled steps and the loop: one trace, falling loss, exact reproducibility, run files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from mlp_core.config.config import Config
from mlp_core.core.errors import UserError
from mlp_core.core.pipeline import eval_dataset
from mlp_core.core.step import preprocess
from mlp_core.fastpaths import choose as fastpaths
from mlp_core.observers.base import Observer
from mlp_core.training.checkpointing import Checkpointer
from mlp_core.training.loop import (
    build_context,
    load_splits,
    load_trained_model,
    run_epochs,
    train_and_evaluate,
)

TIMING = {"wall_seconds", "train_examples_per_sec", "train_seconds", "run_dir"}


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


@pytest.mark.parametrize(
    "fast, compiled",
    [
        (dict(steps_per_call=1, data_on_device=False), "single"),
        (
            dict(steps_per_call=5, data_on_device=False),
            "from_iterator",
        ),  # calls of 5, 3 and 2 steps
        (dict(steps_per_call=16, data_on_device=True), "on_device"),
    ],
)
def test_steps_trace_once_and_loss_falls_by_more_than_half(tmp_path, fast, compiled):
    config = tiny_config(tmp_path, epochs=3, train_subset=2048, val_size=500, **fast)
    ctx = build_context(config, None)
    trainer = ctx.trainer
    before = trainer.evaluate(eval_dataset(ctx.train, 300))
    history = run_epochs(ctx, Checkpointer(ctx))
    after = trainer.evaluate(eval_dataset(ctx.train, 300))  # 300 leaves a smaller last batch
    assert after["loss"] < 0.5 * before["loss"]
    assert history[-1]["val_accuracy"] > 0.8
    assert getattr(trainer.runner, compiled).experimental_get_tracing_count() == 1
    assert trainer.eval_step.compiled.experimental_get_tracing_count() == 1


def test_every_option_of_the_step_trains(tmp_path):
    config = tiny_config(
        tmp_path,
        epochs=1,
        optimizer="nesterov",
        lr=0.05,
        label_smoothing=0.1,
        l2=1e-4,
        clip_norm=1.0,
        dropout=0.3,
        activation="gelu",
        schedule="constant",
    )
    metrics = train_and_evaluate(config, device="/CPU:0")
    assert np.isfinite(metrics["test_loss"]) and metrics["test_accuracy"] > 0.5


def test_normalization_happens_in_the_step_and_can_be_switched_off():
    pixels = tf.constant([[0, 51, 255]], tf.uint8)
    np.testing.assert_allclose(preprocess(pixels, True).numpy(), [[0.0, 0.2, 1.0]])
    np.testing.assert_array_equal(preprocess(pixels, False).numpy(), [[0.0, 51.0, 255.0]])


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_half_precision_pixels_are_the_float32_quotients_rounded_once(dtype):
    """Every pixel value scales to the float32 quotient rounded once to the compute dtype, and
    the 256 values stay distinct."""
    pixels = tf.range(256, dtype=tf.int32)
    got = preprocess(tf.cast(pixels, tf.uint8), True, dtype)
    assert got.dtype == dtype
    rounded_once = tf.cast(tf.cast(pixels, tf.float64) / 255.0, tf.float32)
    np.testing.assert_array_equal(got.numpy(), tf.cast(rounded_once, dtype).numpy())
    assert len(np.unique(got.numpy())) == 256 and got.numpy()[-1] == 1.0


def test_run_writes_config_metrics_and_a_restorable_model(tmp_path):
    config = tiny_config(tmp_path)
    metrics = train_and_evaluate(config)
    run_dir = tmp_path / "logs" / "tiny"
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "val_accuracy",
        "val_loss",
        "epochs",
        "train_examples_per_sec",
        "wall_seconds",
        "history",
    ):
        assert key in saved
    assert saved["epochs"] == 2 and len(saved["history"]) == 2 and saved["status"] == "completed"
    resolved = fastpaths.resolve(config, None)  # config.json records the fast paths chosen
    assert Config.from_dict(json.loads((run_dir / "config.json").read_text())) == resolved
    restored_config, model = load_trained_model(run_dir)
    assert restored_config == resolved and resolved.steps_per_call > 0
    images, labels = load_splits(config)[2].images, load_splits(config)[2].labels
    logits = model(tf.cast(images.reshape(-1, 784), tf.float32) / 255.0)
    accuracy = float(np.mean(np.argmax(logits, 1) == labels))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    with pytest.raises(UserError, match="already exists"):
        train_and_evaluate(config)


def test_same_seed_gives_identical_metrics(tmp_path):
    first = train_and_evaluate(tiny_config(tmp_path, run_name="a", dropout=0.2))
    second = train_and_evaluate(tiny_config(tmp_path, run_name="b", dropout=0.2))
    other = train_and_evaluate(tiny_config(tmp_path, run_name="c", dropout=0.2, seed=1))
    assert _without_timing(first) == _without_timing(second)
    assert _without_timing(first) != _without_timing(other)


class Recorder(Observer):
    def __init__(self):
        self.calls = []

    def on_run_begin(self, ctx):
        self.calls.append(("begin", ctx.steps_per_epoch))

    def on_step_end(self, ctx, step, loss):
        self.calls.append(("step", step, loss.shape.rank))

    def on_epoch_end(self, ctx, epoch, record):
        self.calls.append(("epoch", epoch, "val_accuracy" in record))

    def on_run_end(self, ctx, metrics):
        self.calls.append(("end", metrics["epochs"]))


@pytest.mark.parametrize("per_call, expected", [(1, list(range(1, 9))), (3, [3, 4, 6, 8])])
def test_observers_see_every_call_epoch_and_the_end(tmp_path, per_call, expected):
    """Calls of several steps end at multiples of steps_per_call and never cross an epoch end."""
    recorder = Recorder()
    train_and_evaluate(
        tiny_config(tmp_path, train_subset=256, steps_per_call=per_call), observers=[recorder]
    )
    steps = [c[1] for c in recorder.calls if c[0] == "step"]
    assert recorder.calls[0] == ("begin", 4) and steps == expected
    assert ("step", expected[0], 0) in recorder.calls  # the call's last loss, a scalar
    assert [c for c in recorder.calls if c[0] in ("epoch", "end")] == [
        ("epoch", 1, True),
        ("epoch", 2, True),
        ("end", 2),
    ]
