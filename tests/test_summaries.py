"""TensorBoard summaries, read back with TensorBoard's own loader and served by the real server."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import tensorboard_server, tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlp_core.training.loop import build_context, default_observers, train_and_evaluate

STEPS_PER_EPOCH, EPOCHS, LOG_EVERY = 16, 2, 4
TRAIN_SCALARS = {"loss", "accuracy", "grad_norm", "learning_rate", "examples_per_sec"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    config = tiny_config(
        tmp_path_factory.mktemp("tb"), epochs=EPOCHS, log_every=LOG_EVERY, steps_per_call=2
    )  # calls of 2 steps still log at every 4th step
    return Path(train_and_evaluate(config)["run_dir"])


def load(directory: Path) -> EventAccumulator:
    return EventAccumulator(
        str(directory), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    ).Reload()


def scalar(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    """Scalars written by tf.summary (v2) are stored as tensors."""
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def test_training_scalars_every_n_steps_and_curves_that_overlay(run_dir):
    train, validation, test = (load(run_dir / name) for name in ("train", "validation", "test"))
    assert TRAIN_SCALARS <= set(train.Tags()["tensors"])
    steps = [step for step, _ in scalar(train, "loss")]
    assert steps == list(range(LOG_EVERY, STEPS_PER_EPOCH * EPOCHS + 1, LOG_EVERY))
    losses = [value for _, value in scalar(train, "loss")]
    assert losses[-1] < losses[0]
    rates = [value for _, value in scalar(train, "learning_rate")]
    warmup, total, peak = 2, STEPS_PER_EPOCH * EPOCHS, tiny_config(run_dir).lr  # warm-up: 5 % of 32
    expected = [
        peak * 0.5 * (1 + math.cos(math.pi * (s - 1 - warmup) / (total - warmup))) for s in steps
    ]
    assert rates == pytest.approx(expected, rel=1e-5)  # the rate of each logged step: cosine decay
    assert [s for s, _ in scalar(validation, "accuracy")] == [16, 32]
    assert [s for s, _ in scalar(validation, "loss")] == [16, 32]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert scalar(test, "accuracy") == [(32, pytest.approx(metrics["test_accuracy"]))]


def test_histograms_of_weights_gradients_and_activations_each_epoch(run_dir):
    train = load(run_dir / "train")
    tags = set(train.Tags()["histograms"]) | set(train.Tags()["tensors"])
    layers = ["mlp/dense_0", "mlp/dense_1", "mlp/logits"]
    expected = {
        f"{kind}/{layer}/{var}"
        for kind in ("weights", "gradients")
        for layer in layers
        for var in ("kernel", "bias")
    } | {"activations/hidden_0", "activations/hidden_1"}
    assert expected <= tags
    events = train.Tensors("weights/mlp/dense_0/kernel")
    assert [e.step for e in events] == [16, 32]
    buckets = tf.make_ndarray(events[-1].tensor_proto)  # rows of (left, right, count)
    assert buckets.shape[1] == 3 and buckets[:, 2].sum() == 784 * 64
    activations = tf.make_ndarray(train.Tensors("activations/hidden_1")[-1].tensor_proto)
    assert activations[:, 2].sum() == 500 * 32  # the fixed validation batch through 32 units


def test_images_have_the_figure_sizes(run_dir):
    validation, train = load(run_dir / "validation"), load(run_dir / "train")
    sizes = {}
    for acc, tag in [
        (validation, "misclassified"),
        (validation, "confusion_matrix"),
        (train, "sample_inputs"),
    ]:
        events = acc.Tensors(tag)
        assert [e.step for e in events] == ([0] if tag == "sample_inputs" else [16, 32])
        width, height, png = tf.make_ndarray(events[-1].tensor_proto)
        decoded = tf.io.decode_png(png)
        assert (int(width), int(height)) == (decoded.shape[1], decoded.shape[0])
        sizes[tag] = decoded.shape[:2]
    assert sizes["misclassified"] == (5 * 155, 5 * 130)  # 5x5 digits of 1.3 in at 100 dpi
    assert sizes["confusion_matrix"] == (460, 520)


def test_config_text_and_hparams_describe_the_run(run_dir):
    root = load(run_dir)
    assert "config" in root.Tags()["tensors"]
    text = tf.make_ndarray(root.Tensors("config")[0].tensor_proto).item().decode()
    assert '"hidden": [\n    64,\n    32\n  ]' in text
    assert "_hparams_/session_start_info" in root.Tags()["tensors"]
    assert "_hparams_/experiment" in root.Tags()["tensors"]


def test_no_summaries_switches_the_observer_off(tmp_path):
    assert not any(
        type(o).__name__ == "TensorBoardObserver"
        for o in default_observers(tiny_config(tmp_path, summaries=False))
    )


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_tensorboard_server_serves_the_tags(run_dir):
    with tensorboard_server(run_dir.parent) as data:
        base = f"{data}/plugin"
        deadline, tags = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            try:
                tags = {
                    kind: get_json(f"{base}/{kind}/tags")
                    for kind in ("scalars", "histograms", "images")
                }
                if f"{run_dir.name}/train" in tags["images"]:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        train = f"{run_dir.name}/train"
        assert TRAIN_SCALARS <= set(tags["scalars"][train])
        assert {"accuracy", "loss"} <= set(tags["scalars"][f"{run_dir.name}/validation"])
        assert "weights/mlp/dense_0/kernel" in tags["histograms"][train]
        assert "misclassified" in tags["images"][f"{run_dir.name}/validation"]
        assert "sample_inputs" in tags["images"][train]


def test_train_loss_is_the_mean_cross_entropy_since_the_last_log_point(tmp_path):
    """With label smoothing the step minimizes another quantity: `loss` and `accuracy` stay the
    same quantities as validation's (the mean cross-entropy, here over each epoch's steps), and
    the objective is logged under its own tag."""
    config = tiny_config(tmp_path, label_smoothing=0.2, log_every=STEPS_PER_EPOCH, **PLAIN_PATH)
    metrics = train_and_evaluate(config)
    train = load(Path(metrics["run_dir"]) / "train")
    logged = dict(scalar(train, "loss"))
    for epoch, record in enumerate(metrics["history"], start=1):
        assert logged[epoch * STEPS_PER_EPOCH] == pytest.approx(record["train_loss"], rel=1e-6)
    accuracy = dict(scalar(train, "accuracy"))
    assert accuracy[EPOCHS * STEPS_PER_EPOCH] == pytest.approx(
        metrics["history"][-1]["train_accuracy"], rel=1e-6
    )
    objective = dict(scalar(train, "objective"))
    assert objective.keys() == logged.keys() and objective != logged


def test_the_logged_learning_rate_is_the_one_the_last_update_applied(tmp_path):
    """Under float16 loss scaling overflowing steps are skipped: the schedule follows the
    optimizer's updates, not the steps, and so does the logged rate."""
    config = tiny_config(
        tmp_path,
        epochs=1,
        log_every=STEPS_PER_EPOCH,
        **{**PLAIN_PATH, "precision": "mixed_float16"},
    )
    ctx = build_context(config, None)
    ctx.trainer.guard.scale.assign(2.0**28)  # float16 gradients overflow for the first steps
    run_with_summaries(ctx)
    optimizer = ctx.trainer.optimizer
    updates = int(optimizer.iterations.numpy())
    assert 0 < updates < STEPS_PER_EPOCH  # some steps were skipped
    [(step, rate)] = scalar(load(ctx.run_dir / "train"), "learning_rate")
    assert step == STEPS_PER_EPOCH
    assert rate == pytest.approx(float(optimizer.schedule(updates - 1)), rel=1e-6)
    assert rate != pytest.approx(float(optimizer.schedule(STEPS_PER_EPOCH - 1)), rel=1e-3)


PLAIN_PATH = dict(jit_compile=False, steps_per_call=1, data_on_device=False, precision="float32")


def run_with_summaries(ctx) -> None:
    """One epoch of `ctx` with the TensorBoard observer alone."""
    from mlp_core.observers.summaries import TensorBoardObserver
    from mlp_core.training.checkpointing import Checkpointer
    from mlp_core.training.loop import run_epochs

    observer = TensorBoardObserver(ctx.config.log_every, histogram_every=0)
    observer.on_run_begin(ctx)
    run_epochs(ctx, Checkpointer(ctx), [observer])
    for writer in observer.writers.values():
        writer.flush()
