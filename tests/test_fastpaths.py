"""Fast paths: each trains like the plain step, the exact ones bit for bit; the benchmark's JSON."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_here, tiny_config
from test_reliability import without_timing

from mlp_core.config.config import with_overrides
from mlp_core.core.errors import UserError
from mlp_core.core.optim import SGD, Constant, GradientNorms
from mlp_core.fastpaths import choose as fastpaths
from mlp_core.fastpaths.loops import xla_half_squared_norms
from mlp_core.fastpaths.precision import LossScaleOptimizer
from mlp_core.training.loop import build_context, load_trained_model, train_and_evaluate

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out

PLAIN = dict(jit_compile=False, steps_per_call=1, data_on_device=False, precision="float32")


def run(tmp_path, name: str, **fast):
    config = tiny_config(
        tmp_path,
        run_name=name,
        hidden=(128,),
        train_subset=10_000,
        batch_size=100,
        epochs=2,
        dropout=0.1,
        summaries=False,
        **{**PLAIN, **fast},
    )
    metrics = train_and_evaluate(config, observers=[])
    return metrics, [v.numpy() for v in load_trained_model(tmp_path / "logs" / name)[1].variables]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return run(tmp_path_factory.mktemp("plain"), "plain")


@pytest.mark.parametrize(
    "fast",
    [
        dict(steps_per_call=8),
        dict(data_on_device=True),
        dict(steps_per_call=7, data_on_device=True),
    ],
)
def test_steps_per_call_and_device_data_are_bit_identical_to_the_plain_step(tmp_path, plain, fast):
    metrics, weights = run(tmp_path, "fast", **fast)
    assert without_timing(metrics) == without_timing(plain[0])
    for a, b in zip(weights, plain[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "fast",
    [
        dict(jit_compile=True),
        dict(jit_compile=True, steps_per_call=8, data_on_device=True),
        dict(precision="mixed_bfloat16", steps_per_call=8),
        dict(precision="mixed_float16"),
    ],
)
def test_every_fast_path_reaches_the_plain_accuracy(tmp_path, plain, fast):
    metrics, _ = run(tmp_path, "fast", **fast)
    assert plain[0]["test_accuracy"] > 0.9
    assert abs(metrics["test_accuracy"] - plain[0]["test_accuracy"]) <= 0.003


def test_the_whole_loop_xla_program_is_the_same_for_every_call_length(tmp_path):
    """With XLA and the data on the device the multi-step loop is one program; calls end at epoch
    ends with fewer steps, and a program that took the step count as a compile-time constant
    would be compiled again for each length (seconds each)."""
    config = tiny_config(tmp_path, jit_compile=True, steps_per_call=8, data_on_device=True)
    trainer = build_context(config, None).trainer
    trainer.device_data.set_epoch(0)
    programs = {
        trainer.runner.on_device.experimental_get_compiler_ir(tf.constant(n))(stage="hlo")
        for n in (3, 8)
    }
    assert len(programs) == 1


@pytest.mark.parametrize("xla", [False, True])
def test_gradient_norm_terms_match_l2_loss_and_xla_sums_the_matrix_with_a_dot(xla):
    """Under XLA a matrix's squares are summed by a dot with ones, not by XLA's windowed tree over
    the whole matrix (the slow part of the compiled step); the values are L2Loss's either way."""
    grads = [tf.random.stateless_normal(shape, seed=(1, 2)) for shape in ([784, 512], [512])]
    half_squares = (
        xla_half_squared_norms if xla else (lambda g: tf.stack([tf.nn.l2_loss(x) for x in g]))
    )
    norms = tf.function(lambda *g: half_squares(list(g)), jit_compile=True)
    expected = [float(tf.nn.l2_loss(g)) for g in grads]
    np.testing.assert_allclose(norms(*grads).numpy(), expected, rtol=1e-5)
    hlo = norms.experimental_get_compiler_ir(*grads)(stage="optimized_hlo")
    windows = [line for line in hlo.splitlines() if "reduce-window(" in line]
    assert any("dot(" in line for line in hlo.splitlines()) == xla
    assert any("window={size=32x32" in line for line in windows) == (not xla)


@pytest.mark.parametrize("optimizer", ["adamw", "momentum"])  # XLA: masked / conditional
@pytest.mark.parametrize("jit", [False, True])
def test_a_non_finite_step_reaches_no_weight_slot_or_average(tmp_path, jit, optimizer):
    """In every mode a step with non-finite gradients is skipped whole and raises the flag."""
    config = tiny_config(
        tmp_path, **{**PLAIN, "jit_compile": jit, "ema_decay": 0.9, "optimizer": optimizer}
    )
    ctx = build_context(config, None)
    trainer = ctx.trainer
    batch = (
        tf.constant(ctx.train.images[:64].reshape(64, -1)),
        tf.one_hot(ctx.train.labels[:64], 10),
    )
    trainer.train_step(*batch)  # one good step, so the slots and the average hold values
    trainer.model.layers[-1].bias.assign(trainer.model.layers[-1].bias * np.nan)  # NaN logits
    state = [*trainer.model.trainable_variables[:-1], *trainer.ema.shadow.trainable_variables]
    state += [s for slots in trainer.guard.inner.inner.slots.values() for s in slots]
    before = [v.numpy() for v in state]
    trainer.train_step(*batch)
    assert trainer.diverged.numpy() and int(trainer.optimizer.iterations.numpy()) == 1
    for old, v in zip(before, state):
        np.testing.assert_array_equal(old, v.numpy())


@pytest.mark.parametrize("jit", [False, True])
def test_float16_overflow_halves_the_loss_scale_and_skips_without_diverging(tmp_path, jit):
    config = tiny_config(tmp_path, **{**PLAIN, "precision": "mixed_float16", "jit_compile": jit})
    ctx = build_context(config, None)
    trainer, batch = (
        ctx.trainer,
        (tf.constant(ctx.train.images[:64].reshape(64, -1)), tf.one_hot(ctx.train.labels[:64], 10)),
    )
    before = [v.numpy() for v in trainer.model.trainable_variables]
    loss_scale = trainer.guard
    loss_scale.scale.assign(2.0**40)  # float16 gradients overflow at this scale
    trainer.train_step(*batch)
    assert loss_scale.scale.numpy() == 2.0**39 and not trainer.diverged.numpy()
    assert all(
        np.array_equal(a, v.numpy()) for a, v in zip(before, trainer.model.trainable_variables)
    )
    loss_scale.scale.assign(2.0**10)
    trainer.train_step(*batch)
    assert loss_scale.good_steps.numpy() == 1 and int(trainer.optimizer.iterations.numpy()) == 1


def test_loss_scale_grows_after_enough_good_steps():
    variable = tf.Variable([1.0])
    inner = SGD([variable], Constant(0.1))
    scale = LossScaleOptimizer(inner, GradientNorms(1), initial=4.0, growth_interval=3)
    apply = tf.function(lambda g: scale.apply([g], [variable]))
    for grad in (1.0, 1.0, 1.0, 1.0, np.inf):
        apply(tf.constant([grad]))
    assert scale.scale.numpy() == 4.0 and scale.good_steps.numpy() == 0  # x2 after 3, /2 at the end
    assert int(inner.iterations.numpy()) == 4  # the overflowing step was skipped


def test_automatic_choices_and_explicit_ones(tmp_path):
    auto = fastpaths.resolve(tiny_config(tmp_path), None)
    expected = fastpaths.CPU_BF16_DEFAULTS if fastpaths.cpu_has_bf16() else fastpaths.CPU_DEFAULTS
    assert {k: getattr(auto, k) for k in PLAIN} == expected
    assert expected["jit_compile"] == (not fastpaths.cpu_has_bf16())
    assert not fastpaths.resolve(tiny_config(tmp_path, augment="affine"), None).jit_compile
    explicit = fastpaths.resolve(tiny_config(tmp_path, steps_per_call=3, jit_compile=True), None)
    assert (explicit.steps_per_call, explicit.jit_compile) == (3, True)
    with pytest.raises(UserError, match="work with --strategy default only, not mirrored"):
        fastpaths.resolve(tiny_config(tmp_path, strategy="mirrored", data_on_device=True), None)
    assert (
        fastpaths.resolve(
            with_overrides(
                auto,
                strategy="mirrored",
                jit_compile=False,
                data_on_device=False,
                steps_per_call=1,
                precision="float32",
            ),
            None,
        ).steps_per_call
        == 1
    )


def test_bfloat16_is_chosen_only_on_cpus_that_have_it(tmp_path):
    flags = "flags\t\t: fpu sse2 avx2 avx512f {}\nbugs\t\t: spectre_v1\n"
    for extra, expected in (("avx512_bf16", True), ("amx_bf16", True), ("avx512_vnni", False)):
        (tmp_path / "cpuinfo").write_text(flags.format(extra))
        assert fastpaths.cpu_has_bf16(str(tmp_path / "cpuinfo")) is expected
    assert not fastpaths.cpu_has_bf16(str(tmp_path / "missing"))


def test_benchmark_json_is_well_formed(tmp_path):
    out = tmp_path / "bench.json"
    result = run_here(  # in this process: it saves a TensorFlow start-up
        "benchmark.py",
        "--batch-sizes",
        "32",
        "--steps",
        "4",
        "--warmup",
        "2",
        "--train-subset",
        "2048",
        "--json",
        str(out),
        "--roof-flops",
        "1e8",
        "--input-batches",
        "2",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert {"device", "tensorflow", "limit_examples_per_sec", "results"} <= set(report)
    assert set(report["limit_examples_per_sec"]) == {"32"}
    variants = {r["variant"] for r in report["results"]}
    assert {
        "keras_fit",
        "plain",
        "xla",
        "steps_per_call",
        "data_on_device",
        "best",
        "best_summaries",
        "mixed_bfloat16",
    } <= variants
    for row in report["results"]:
        assert {
            "variant",
            "batch_size",
            "examples_per_sec",
            "vs_keras_fit",
            "fraction_of_limit",
        } <= set(row)
        assert row["examples_per_sec"] > 0 and row["batch_size"] == 32
    keras = [r for r in report["results"] if r["variant"] == "keras_fit"]
    assert [r["vs_keras_fit"] for r in keras] == [1.0]
    for row in keras:  # the median of the epochs timed before and after our variants
        epochs = report["keras_fit_epochs"][str(row["batch_size"])]
        assert len(epochs) >= 6 and row["examples_per_sec"] == pytest.approx(np.median(epochs))
    assert report["best"].startswith("fast paths:")
    assert tf.io.decode_png(out.with_suffix(".png").read_bytes()).shape[0] > 0


def test_training_flops_count_the_step_s_matrix_multiplies():
    from mlp_core.benchmark.variants import REFERENCE, training_flops
    from mlp_core.training.trainer import build_trainer

    # 784x512, 512x256, 256x10: forward and weight gradients 4 FLOPs per weight, input gradients 2
    # per weight of the two upper layers only.
    assert training_flops(REFERENCE) == 4 * 535_040 + 2 * (131_072 + 2_560) == 2_407_424
    graph = build_trainer(REFERENCE, 10).train_step.get_concrete_function().graph
    shapes = [tuple(op.outputs[0].shape) for op in graph.get_operations() if op.type == "MatMul"]
    assert (
        len(shapes) == 8 and (None, 784) not in shapes
    )  # 3 forward, 3 weight and 2 input gradients


# Run in a fresh process: a long-lived one may serve the buffer from memory it freed earlier, and
# the test must not leave this process with glibc's worst settings.
FAULTS_SCRIPT = """
import ctypes, json, resource
from mlp_core.fastpaths import choose as fastpaths

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
SIZE = 16 << 20  # 4,096 pages


def faults_per_buffer(times=8):
    def use_a_buffer():
        buffer = libc.malloc(SIZE)
        ctypes.memset(buffer, 1, SIZE)
        libc.free(ctypes.c_void_p(buffer))

    use_a_buffer()  # not counted: it may have to grow the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        use_a_buffer()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / times


# glibc's starting state without its adaptive thresholds: big buffers mmapped, tops trimmed.
assert libc.mallopt(-3, 128 << 10) == 1 and libc.mallopt(-1, 128 << 10) == 1
untuned = faults_per_buffer()
print(json.dumps([untuned, fastpaths.keep_freed_memory(), faults_per_buffer()]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_stops_the_page_faults_of_a_reused_buffer(monkeypatch):
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-c", FAULTS_SCRIPT], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    untuned, chosen, tuned = json.loads(result.stdout.splitlines()[-1])
    assert untuned > 1000  # each of the 4,096 pages faulted in anew
    assert chosen == fastpaths.ALLOCATOR and tuned < 50
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")  # glibc's own variables: the user's choice wins
    assert fastpaths.keep_freed_memory() == {}
