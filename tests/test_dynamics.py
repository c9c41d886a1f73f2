"""Training dynamics against hand computations, and the --profile-steps flag's checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from test_summaries import load, scalar

from mlp_core.config.config import parse_config
from mlp_core.core.errors import UserError
from mlp_core.core.model import MLP
from mlp_core.observers.dynamics import DynamicsObserver, grad_norms, unit_statistics
from mlp_core.observers.profiling import ProfilerObserver, profiling
from mlp_core.training.loop import build_context


def layer_arrays(model: MLP) -> dict[str, np.ndarray]:
    """Each layer's kernel and bias as one flat numpy vector (a copy)."""
    return {
        layer.name: np.concatenate([layer.kernel.numpy().ravel(), layer.bias.numpy().ravel()])
        for layer in model.layers
    }


@pytest.mark.parametrize("count", [1, 3])
def test_update_ratio_is_the_applied_update_per_step_over_the_weight_norm(tmp_path, count):
    ctx = build_context(tiny_config(tmp_path, steps_per_call=count, data_on_device=True), None)
    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    observer = DynamicsObserver(SimpleNamespace(log_every=count, writers={"train": writer}))
    model = ctx.trainer.model
    ctx.trainer.train_steps(None, count)  # Adam's first update is +-lr everywhere: skip it
    before = layer_arrays(model)
    observer.on_call_begin(ctx, count, count)
    outputs = ctx.trainer.train_steps(None, count)
    observer.on_step_end(ctx, 2 * count, outputs)
    after = layer_arrays(model)
    writer.close()
    train = load(tmp_path / "train")
    for name in ("dense_0", "dense_1", "logits"):
        by_hand = np.linalg.norm(after[name] - before[name]) / (
            count * np.linalg.norm(before[name])
        )
        assert by_hand > 0
        [(step, logged)] = scalar(train, f"dynamics/update_ratio/{name}")
        assert step == 2 * count and logged == pytest.approx(by_hand, rel=1e-4)
        [(_, norm)] = scalar(train, f"dynamics/weight_norm/{name}")
        assert norm == pytest.approx(np.linalg.norm(after[name]), rel=1e-5)


def test_per_layer_gradient_norms_make_up_the_global_norm(tmp_path):
    ctx = build_context(tiny_config(tmp_path, steps_per_call=1, data_on_device=True), None)
    ctx.trainer.train_steps(None, 1)
    norms = grad_norms(ctx.trainer.model, ctx.trainer.norms.half_squares)
    assert set(norms) == {"dense_0", "dense_1", "logits"}
    total = np.sqrt(sum(float(n) ** 2 for n in norms.values()))
    assert total > 0
    assert total == pytest.approx(float(ctx.trainer.norms.global_norm()), rel=1e-5)


def test_dead_unit_fraction_on_a_layer_built_with_dead_units():
    model = MLP(hidden=(8,), seed=0)
    hidden = model.layers[0]
    kernel = np.abs(hidden.kernel.numpy())  # non-negative inputs: every unit fires...
    kernel[:, :3] = -kernel[:, :3]  # ...except these three, which never exceed 0
    hidden.kernel.assign(kernel)
    hidden.bias.assign(np.r_[[-0.1] * 3, [0.1] * 5].astype(np.float32))
    x = tf.random.stateless_uniform([64, 784], seed=[1, 2])
    [activations] = model.forward(x)[:-1]
    [stats] = unit_statistics([activations]).values()
    assert float(stats["dead_fraction"]) == pytest.approx(3 / 8)
    values = activations.numpy()
    assert float(stats["activation_mean"]) == pytest.approx(values.mean(), rel=1e-5)
    assert float(stats["activation_std"]) == pytest.approx(values.std(), rel=1e-5)


@pytest.mark.parametrize("text", ["5:2", "0:3", "7", "a:b"])
def test_profile_steps_flag_rejects_bad_ranges(text):
    with pytest.raises(SystemExit):
        parse_config(["--profile-steps", text])


def test_profile_steps_beyond_the_run_is_a_user_error(tmp_path):
    ctx = build_context(tiny_config(tmp_path, epochs=1), None)
    assert parse_config(["--profile-steps", "3:9"]).profile_steps == "3:9"
    assert parse_config([]).profile_steps == ""  # off by default
    with pytest.raises(UserError, match="only 16 steps"):
        ProfilerObserver(17, 20).on_run_begin(ctx)


def test_profile_of_an_xla_program_shows_its_own_ops(tmp_path):
    """docs/tensorboard.md: the trace names XLA's ops (the dot, the fusions) by their HLO names."""
    f = tf.function(lambda a: tf.nn.relu(tf.matmul(a, a) + 1.0), jit_compile=True)
    a = tf.ones([256, 256])
    f(a)
    with profiling(tmp_path):
        f(a).numpy()
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(tmp_path.glob("plugins/profile/*/*.xplane.pb")).read_bytes())
    names = {m.name for p in space.planes for m in p.event_metadata.values()}
    assert any(n.startswith("MatMul.") for n in names), sorted(names)
    assert any("_fusion" in n for n in names), sorted(names)
