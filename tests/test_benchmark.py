"""The benchmark's arithmetic, statistics and modes, on tiny settings (never its timings)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re

import numpy as np
import pytest
import tensorflow as tf

from mlp_core.benchmark import modes as bench_modes
from mlp_core.benchmark import roofs as bench_roofs
from mlp_core.benchmark.markdown import (
    REQUIRED,
    ROW_FIELDS,
    load_report,
    markdown,
    missing_fields,
    summary_table,
)
from mlp_core.benchmark.report import (
    save_plot,
    save_roofline_plot,
    save_sweep_plot,
    sweep_lines,
    table,
)
from mlp_core.benchmark.throughput import (
    Plan,
    device_details,
    result_row,
    run_benchmark,
    steps_for,
    variants_at,
)
from mlp_core.benchmark.variants import (
    BEST,
    KERAS_BEST,
    KERAS_ROWS,
    REFERENCE,
    keras_arrays,
    keras_model,
    training_flops,
)
from mlp_core.core.errors import UserError
from mlp_core.fastpaths import choose as fastpaths
from mlp_core.training.loop import load_splits
from tests.conftest import ROOT, assert_clean_error, run_here, run_script, tiny_config

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out

TINY = dataclasses.replace(REFERENCE, hidden=(2,))  # 784-2-10


def test_flops_of_a_tiny_mlp_by_hand():
    # forward 2*(784*2 + 2*10); weight gradients the same; input gradient of the second layer only
    by_hand = 2 * (1568 + 20) + 2 * (1568 + 20) + 2 * 20
    assert training_flops(TINY) == by_hand == 6392
    shapes = bench_roofs.step_matmul_shapes(TINY, batch=10)
    assert len(shapes) == 5
    assert bench_roofs.matmul_flops(shapes) == 10 * by_hand


def test_bytes_and_roofline_of_a_tiny_mlp_by_hand():
    assert bench_roofs.parameter_count(TINY) == 784 * 2 + 2 + 2 * 10 + 10 == 1600
    moved = bench_roofs.step_bytes(TINY, batch=10)
    # Adam: read weight, 2 slots and gradient, write weight and 2 slots: 7 float32 per parameter
    assert moved["parameters"] == 1600 * 7 * 4 == 44800
    # pixels (uint8) + one-hot (float32) + 12 outputs written, read, and their gradients the same
    assert moved["per_example"] == 784 + 40 + 12 * 4 * 4 == 1016
    assert moved["total"] == 44800 + 10 * 1016
    # compute takes 0.01 s per step, memory 0.02 s: memory-bound, 10 examples / 0.02 s
    line = bench_roofs.roofline(
        TINY, 10, flops_per_sec=6392 * 10 / 0.01, bytes_per_sec=54960 / 0.02
    )
    assert line["bound"] == "memory"
    assert line["limit_examples_per_sec"] == pytest.approx(500)
    assert line["compute_bound_examples_per_sec"] == pytest.approx(1000)
    assert bench_roofs.step_bytes(TINY, 10, act_bytes=2)["per_example"] == 784 + 40 + 12 * 4 * 2


def test_jitter_on_known_numbers():
    stats = bench_roofs.jitter([3.0, 1.0, 100.0, 2.0, 4.0])
    # median 3; absolute deviations 0, 2, 97, 1, 1 -> median 1
    assert stats["median"] == 3.0 and stats["spread"] == pytest.approx(1.4826)
    assert (stats["min"], stats["max"]) == (1.0, 100.0)


def _dots_in_loop_body(loop) -> list[str]:
    """The dot instructions of the optimized HLO's while-loop body, with their result shapes."""
    hlo = loop.experimental_get_compiler_ir(tf.constant(3))(stage="optimized_hlo")
    body = re.search(r"while\(.*?body=(%[\w.\-]+)", hlo).group(1)
    block = re.search(re.escape(body) + r" \(.*?\n}", hlo, re.S).group(0)
    return re.findall(r"= (f32\[[\d,]+\])\{[\d,]+\} dot\(", block)


def test_the_xla_matmul_loop_multiplies_in_every_iteration():
    """XLA hoists a product of loop-invariant operands out of a loop (the graph loop's operands,
    compiled as they are, leave no dot in the loop at all), so `xla_matmul_loop` updates its left
    operands in place every iteration: the full-size products stay in the loop body."""
    shapes = [((8, 16), (16, 4), False, False), ((8, 16), (8, 4), True, False)]
    dots = _dots_in_loop_body(bench_roofs.xla_matmul_loop(shapes, tf.float32))
    assert sorted(dots) == ["f32[16,4]", "f32[8,4]"]
    hoisted = tf.function(
        bench_roofs.matmul_loop(shapes, tf.float32).python_function,
        input_signature=[tf.TensorSpec([], tf.int32)],
        jit_compile=True,
    )
    assert _dots_in_loop_body(hoisted) == []
    rates = bench_roofs.matmul_rates(TINY, [4], "float32", "/CPU:0", flops=1e5, xla=True)
    assert set(rates) == {"square", "4"} and rates["4"]["flops_per_sec"] > 0


def test_the_serial_limit_of_a_tiny_mlp_by_hand():
    # 1,600 parameters, each read or written 7 times (weight, 2 Adam slots, gradient), 4 bytes
    assert bench_roofs.serial_limit(TINY, 10, 1.0, bytes_per_sec=44_800.0) == 10 / (1.0 + 1.0)


def test_the_matmul_share_as_compiled_takes_the_variants_compiler():
    """A variant compiled by XLA is measured against XLA's matmul rates, the others against the
    graph's; `matmul_share` stays the graph's for every variant (the field it always was)."""
    line = {"compute_bound_examples_per_sec": 64_000.0, "limit_examples_per_sec": 64_000.0}
    limits = {
        "compute_flops_per_sec": {"float32": {"64": {"seconds": 0.001}}},
        "compute_flops_per_sec_xla": {"float32": {"64": {"seconds": 0.002}}},
        "roofline": {"float32": {"64": dict(line, bound="compute")}},
        "limit_examples_per_sec": {"64": 64_000.0},
        # the reference MLP's parameter traffic (15,002,904 bytes) in 1 ms
        "memory_bytes_per_sec": {"roof": bench_roofs.step_bytes(REFERENCE, 64)["parameters"] * 1e3},
    }
    graph = dataclasses.replace(REFERENCE, batch_size=64)
    xla = dataclasses.replace(graph, jit_compile=True)
    # 32,000 ex/s at batch 64: 2 ms a step, so 1 ms of matmuls is half of it and 2 ms all of it;
    # the serial limit adds the 1 ms update: 64 / 2 ms and 64 / 3 ms.
    for config, share, serial in ((graph, 0.5, 32_000.0), (xla, 1.0, 64 / 0.003)):
        keras = {"keras_fit": 16_000.0, "keras_fit_best": 20_000.0}
        row = result_row("v", 64, [32_000.0] * 3, keras, config, limits)
        assert (row["vs_keras_fit"], row["vs_keras_best"]) == (2.0, 1.6)
        assert row["matmul_share"] == pytest.approx(0.5)
        assert row["matmul_share_as_compiled"] == pytest.approx(share)
        assert row["serial_limit_examples_per_sec"] == pytest.approx(serial)
        assert row["serial_limit_of_dtype_roof"] == pytest.approx(serial / 64_000.0)
        assert row["fraction_of_serial_limit"] == pytest.approx(32_000.0 / serial)


def test_olympic_mean_and_time_stats():
    assert bench_modes.olympic_mean([5.0, 1.0, 3.0, 9.0]) == 4.0
    assert bench_modes.olympic_mean([2.0, 4.0]) == 3.0
    stats = bench_modes.time_stats(
        [
            {"seconds": 5.0, "epochs": 2},
            {"seconds": 1.0, "epochs": 1},
            {"seconds": 9.0, "epochs": None},
        ]
    )
    assert stats["reached"] == 2 and stats["median_seconds"] == 3.0 and stats["epochs"] == 1.5


def test_steps_per_round_and_variants_per_batch():
    assert steps_for(Plan(steps=7), 64) == 7
    assert steps_for(Plan(round_examples=40000), 128) == 320  # 312.5 -> a multiple of 16
    assert steps_for(Plan(round_examples=40000), 4096) == 16
    plan = Plan(variants=("plain", "best_float32"), sweep_variants=("plain",), full_at=(128,))
    assert variants_at(plan, 128, None) == ["plain", "best_float32"]
    assert variants_at(plan, 64, None) == ["plain"]
    with pytest.raises(UserError, match="nope"):
        variants_at(Plan(variants=("nope",)), 128, None)


def test_a_tiny_sweep_has_every_field_and_draws_its_charts(tmp_path):
    train, _, _ = load_splits(dataclasses.replace(REFERENCE, train_subset=512, batch_size=64))
    plan = Plan(
        batch_sizes=(32, 64),
        steps=4,
        warmup=1,
        rounds=2,
        variants=("plain", "best_float32", "keras_fit_best"),  # a Keras row: always there
        sweep_variants=("best_float32",),
        full_at=(64,),
        input_batches=2,
        roof_flops=1e6,
        roof_megabytes=1,
        profile=tmp_path / "profile",
    )
    report = run_benchmark(train, plan, None)
    assert sorted(report) == sorted(REQUIRED) and missing_fields(report) == []
    assert report["onednn"] in (True, False)
    glibc = platform.libc_ver()[0] == "glibc" and not any(
        k.startswith("MALLOC_") for k in os.environ
    )
    assert report["allocator"] == (fastpaths.ALLOCATOR if glibc else {})
    assert [(r["variant"], r["batch_size"]) for r in report["results"]] == [
        ("keras_fit", 32),
        ("keras_fit_best", 32),
        ("best_float32", 32),
        ("keras_fit", 64),
        ("keras_fit_best", 64),
        ("plain", 64),
        ("best_float32", 64),
    ]
    for row in report["results"]:
        epochs = report["keras_fit_epochs"][str(row["batch_size"])]
        assert sorted(row) == sorted(ROW_FIELDS)
        assert len(row["rounds"]) == (len(epochs) if row["variant"] == "keras_fit" else 2)
        assert row["min"] <= row["examples_per_sec"] <= row["max"]
    assert_the_ratios_are_against_the_faster_keras_row(report)
    assert set(report["roofline"]) == {"float32", "bfloat16"} and set(
        report["roofline"]["float32"]
    ) == {"32", "64"}
    assert set(report["input_pipeline"]["32"]) == {"tf_data", "device_data"}
    assert list((tmp_path / "profile" / "plain-64" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert "best_float32" in table(report)
    # plain ran at one batch size: a point on the roofline, no line in the sweep
    assert sweep_lines(report) == ["keras_fit", "keras_fit_best", "best_float32"]
    assert sweep_lines(report, least=1) == ["keras_fit", "keras_fit_best", "plain", "best_float32"]
    for save in (save_plot, save_sweep_plot, save_roofline_plot):
        assert save(report, tmp_path / f"{save.__name__}.png").read_bytes()[:4] == b"\x89PNG"
    # A bfloat16 row adds its own dtype's limit to the bars.
    half = dict(report, results=[dict(r, dtype="bfloat16") for r in report["results"]])
    assert save_plot(half, tmp_path / "half.png").read_bytes()[:4] == b"\x89PNG"
    assert_markdown_says_what_the_report_says(report)
    assert_the_script_reports_a_saved_run_again(report, tmp_path)
    assert_a_report_missing_a_current_field_is_refused(report, tmp_path)


def assert_the_ratios_are_against_the_faster_keras_row(report: dict) -> None:
    """vs_keras_best divides by the faster Keras row, vs_keras_fit by `fit` as written, and
    keras_baseline names the faster row; the goals quote the same ratios."""
    for batch in (32, 64):
        rows = {r["variant"]: r for r in report["results"] if r["batch_size"] == batch}
        keras = {name: rows[name]["examples_per_sec"] for name in KERAS_ROWS}
        assert report["keras_baseline"][str(batch)] == max(keras, key=keras.__getitem__)
        assert rows["keras_fit_best"]["rounds"] and len(set(keras.values())) == 2
        for row in rows.values():
            eps = row["examples_per_sec"]
            assert row["vs_keras_best"] == pytest.approx(eps / max(keras.values()), rel=1e-12)
            assert row["vs_keras_fit"] == pytest.approx(eps / keras["keras_fit"], rel=1e-12)
        goal = report["goals"][str(batch)]
        assert goal["variant"] not in KERAS_ROWS
        assert goal["vs_keras_best"] == rows[goal["variant"]]["vs_keras_best"]
    assert report["keras_fit_best"]["steps_per_execution"] == BEST["steps_per_call"]
    assert report["keras_fit_best"]["jit_compile"] is True


def assert_markdown_says_what_the_report_says(report: dict) -> None:
    text = markdown(report)
    rows = {(r["variant"], r["batch_size"]): r for r in report["results"]}
    # Batch 64 ran every variant: its table has one row per variant, with the JSON's numbers.
    table_64 = text.split("Batch 64 ")[1].split("\n\n")[1].splitlines()
    cells = [line.strip("| ").split(" | ") for line in table_64[2:]]
    assert [c[0] for c in cells] == [
        "`keras_fit` (float32)",
        "`keras_fit_best` (float32)",
        "`plain` (float32)",
        "`best_float32` (float32)",
    ]
    for c, name in zip(cells, ("keras_fit", "keras_fit_best", "plain", "best_float32")):
        row = rows[name, 64]
        assert c[1] == f"{row['examples_per_sec']:,.0f}"
        assert c[5] == f"{row['vs_keras_best']:.2f}x"
        assert c[10] == f"{100 * row['matmul_share_as_compiled']:.0f} %"
    # The summary table: the same medians and ratios, against the baseline its head names.
    summary = summary_table(report).splitlines()
    assert f"vs `{report['keras_baseline']['64']}`" in summary[0]
    best = next(line for line in summary if line.startswith("| `keras_fit_best`"))
    assert best.strip("| ").split(" | ")[1:3] == [
        f"{rows['keras_fit_best', 64]['examples_per_sec']:,.0f} "
        f"({rows['keras_fit_best', 64]['spread']:,.0f})",
        f"{rows['keras_fit_best', 64]['vs_keras_best']:.2f}x",
    ]
    # The sweep: the variants that ran at both batch sizes, one row per batch size.
    sweep = next(part for part in text.split("\n\n") if part.startswith("| batch |"))
    head, _, row_32, row_64 = sweep.splitlines()
    assert head.startswith("| batch | `keras_fit` | `keras_fit_best` | `best_float32` |")
    assert row_32.startswith(
        f"| 32 | {rows['keras_fit', 32]['examples_per_sec']:,.0f} "
        f"| {rows['keras_fit_best', 32]['examples_per_sec']:,.0f} "
        f"| {rows['best_float32', 32]['examples_per_sec']:,.0f} |"
    )
    assert row_64.startswith("| 64 |") and "Scaling" not in text and "Time to" not in text


def assert_the_script_reports_a_saved_run_again(report: dict, tmp_path) -> None:
    saved = tmp_path / "saved" / "bench.json"
    saved.parent.mkdir()
    saved.write_text(json.dumps(report))
    result = run_here(
        "benchmark.py", "--from-json", str(saved), "--markdown", str(tmp_path / "t.md")
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t.md").read_text() == markdown(report)
    for name in ("bench.png", "bench_sweep.png", "bench_roofline.png"):
        assert (saved.parent / name).read_bytes()[:4] == b"\x89PNG"


def assert_a_report_missing_a_current_field_is_refused(report: dict, tmp_path) -> None:
    """A report without a current field, at the top or in a row, is a one-line error."""
    rows = [dict(r) for r in report["results"]]
    del rows[1]["vs_keras_best"]
    for old, missing in (
        ({k: v for k, v in report.items() if k != "keras_baseline"}, "keras_baseline"),
        ({k: v for k, v in report.items() if k != "device_details"}, "device_details"),
        (dict(report, results=rows), "results[].vs_keras_best"),
    ):
        path = tmp_path / "old.json"
        path.write_text(json.dumps(old))
        result = run_here("benchmark.py", "--from-json", str(path))
        assert_clean_error(result, "old.json", f"(no {missing})")
        assert len(result.stderr.strip().splitlines()) == 1


def test_the_committed_report_renders_every_median():
    """docs/throughput.md quotes this run, so a renamed field must not leave it unreadable."""
    report = load_report(ROOT / "docs" / "benchmark.json")
    text, rows = markdown(report), report["results"]
    missing = [r for r in rows if f"| {r['examples_per_sec']:,.0f} |" not in text]
    assert rows and not missing
    assert all(f"{r['examples_per_sec']:,.0f}" in table(report) for r in rows)


def _row(variant: str, batch: int, rate: float, dtype: str = "float32") -> dict:
    return {
        "variant": variant,
        "batch_size": batch,
        "dtype": dtype,
        "examples_per_sec": rate,
        "spread": rate / 100,
        "vs_keras_fit": rate / 1000,
        "vs_keras_best": rate / 1250,
        "fraction_of_dtype_roof": rate / 10000,
    }


def test_the_summary_table_has_the_main_variants_at_the_detailed_batches():
    main = (("best", 2500), ("mixed_bfloat16", 2400), ("keras_fit", 1000), ("keras_fit_best", 1250))
    rows = [_row(v, b, r) for v, r in main for b in (8, 16)]
    rows.append(_row("plain", 32, 1200))  # a batch of the sweep only: not a detailed one
    baseline = {"8": "keras_fit_best", "16": "keras_fit"}
    lines = summary_table({"results": rows, "keras_baseline": baseline}).splitlines()
    head = lines[0].strip("| ").split(" | ")
    assert [head[2], head[5]] == ["vs `keras_fit_best`", "vs `keras_fit`"]
    # in the README's order; mixed_bfloat16 is not one of its variants, plain not at 8 or 16
    cells = [line.strip("| ").split(" | ") for line in lines[2:]]
    assert [c[0] for c in cells] == [
        "`keras_fit` (float32)",
        "`keras_fit_best` (float32)",
        "`best` (float32)",
    ]
    # each rate with its spread, vs_keras_best and the fraction of the roof, at both batch sizes
    assert cells[2][1:] == ["2,500 (25)", "2.00x", "25.0 %"] * 2
    assert cells[0][1:4] == ["1,000 (10)", "0.80x", "10.0 %"]
    assert summary_table({"results": []}) == ""  # markdown() renders a report with no rows


def test_reporting_a_missing_or_foreign_file_is_one_line(tmp_path):
    missing = run_here("benchmark.py", "--from-json", str(tmp_path / "none.json"))
    assert_clean_error(missing, "none.json", "cannot read")
    (tmp_path / "broken.json").write_text('{"results": [')
    assert_clean_error(
        run_here("benchmark.py", "--from-json", str(tmp_path / "broken.json")), "not a JSON file"
    )
    (tmp_path / "other.json").write_text('{"results": []}')
    other = run_here("benchmark.py", "--from-json", str(tmp_path / "other.json"))
    assert_clean_error(other, "other.json", f"(no {', '.join(REQUIRED[:-1])})")
    assert len(other.stderr.strip().splitlines()) == 1


def test_scaling_runs_one_process_per_replica_count():
    result = bench_modes.scaling([1, 2], per_replica_batch=16, steps=3, rounds=1, train_subset=256)
    assert [(r["replicas"], r["global_batch"]) for r in result["rows"]] == [(1, 16), (2, 32)]
    assert result["rows"][0]["efficiency"] == 1.0 and result["rows"][1]["examples_per_sec"] > 0


def test_time_to_accuracy_gives_one_time_per_seed(tmp_path):
    config = tiny_config(tmp_path, epochs=2, summaries=False)
    result = bench_modes.time_to_accuracy(0.5, config, None, seeds=2)
    for side in ("custom", "keras_fit", "keras_fit_best"):
        assert [run["seed"] for run in result[side]["runs"]] == [0, 1]
        assert all(run["seconds"] > 0 for run in result[side]["runs"])
        assert result[side]["reached"] == 2 and result[side]["median_seconds"] is not None
    medians = {name: result[name]["median_seconds"] for name in KERAS_ROWS}
    assert result["keras_baseline"] == min(medians, key=medians.__getitem__)
    ours = result["custom"]["median_seconds"]
    assert result["speedup_vs_keras_best"] == pytest.approx(min(medians.values()) / ours)
    assert result["speedup"] == pytest.approx(medians["keras_fit"] / ours)
    report = {"time_to_accuracy": result}
    assert not [k for k in missing_fields(report) if k.startswith("time_to_accuracy")]


def test_keras_at_its_best_computes_what_fit_as_written_does():
    """The best Keras model takes the pixels as stored (uint8) and scales them itself, runs 16
    steps per call and keeps XLA under op determinism (the benchmark's setting)."""
    tf.config.experimental.enable_op_determinism()
    train, _, _ = load_splits(dataclasses.replace(REFERENCE, train_subset=64, batch_size=32))
    written, best = keras_model(REFERENCE), keras_model(REFERENCE, best=True)
    best.set_weights(written.get_weights())
    (x, _), (x_best, _) = keras_arrays(train), keras_arrays(train, best=True)
    assert x_best.dtype == (np.uint8 if KERAS_BEST["inputs"] == "uint8" else np.float32)
    assert np.allclose(best.predict(x_best, verbose=0), written.predict(x, verbose=0), atol=1e-5)
    assert best.steps_per_execution == BEST["steps_per_call"] == 16
    assert best.jit_compile is True


def test_device_details_name_the_gpu_and_the_cuda_build(monkeypatch):
    build = tf.sysconfig.get_build_info()
    cpu = device_details(None)
    assert cpu == {
        "gpu": None,
        "compute_capability": None,
        "cuda_build_version": build.get("cuda_version"),
        "cudnn_build_version": build.get("cudnn_version"),
    }
    # On a GPU: what TensorFlow reports of it (faked here: this machine has none).
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0", "gpu1"])
    details = {"gpu0": {}, "gpu1": {"device_name": "NVIDIA T4", "compute_capability": (7, 5)}}
    monkeypatch.setattr(tf.config.experimental, "get_device_details", details.__getitem__)
    gpu = device_details("/GPU:1")
    assert (gpu["gpu"], gpu["compute_capability"]) == ("NVIDIA T4", "7.5")
    assert gpu["cuda_build_version"] == cpu["cuda_build_version"]


def test_script_rejects_an_unknown_variant_in_one_line():
    assert_clean_error(
        run_script(
            "benchmark.py", "--variants", "nope", "--train-subset", "256", "--batch-sizes", "32"
        ),
        "error:",
        "nope",
    )


def test_thread_pools_cannot_be_resized_once_tensorflow_runs():
    import tensorflow as tf

    from mlp_core.fastpaths.choose import set_threads

    tf.constant(1.0) + 1.0  # TensorFlow has set up its devices
    with pytest.raises(UserError, match="thread pools"):
        set_threads(2, 1)
