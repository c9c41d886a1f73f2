"""The benchmark's report as Markdown: the tables docs/throughput.md shows, rendered from the JSON
so that the document and `docs/benchmark.json` always say the same (`benchmark.py --from-json`)."""

from __future__ import annotations

import json
from pathlib import Path

from mlp_core.benchmark.report import detailed_batches
from mlp_core.core.errors import UserError

# Every field a report has and the tables and charts read; scaling, time to accuracy and the
# command are the optional modes'. A report missing one of these is not reported.
REQUIRED = (
    "device",
    "device_details",
    "tensorflow",
    "keras",
    "matmul_flops_per_sec",
    "flops_per_example",
    "limit_examples_per_sec",
    "limit_dtype",
    "steps",
    "steps_per_round",
    "warmup_steps",
    "rounds",
    "keras_fit_epochs",
    "keras_fit_best",
    "keras_baseline",
    "best",
    "threading",
    "allocator",
    "onednn",
    "compute_flops_per_sec",
    "compute_flops_per_sec_xla",
    "memory_bytes_per_sec",
    "step_bytes",
    "roofline",
    "roof_in_turns_flops_per_sec",
    "input_pipeline",
    "goals",
    "results",
)
ROW_FIELDS = (
    "variant",
    "batch_size",
    "examples_per_sec",
    "vs_keras_fit",
    "vs_keras_best",
    "fraction_of_limit",
    "dtype",
    "fraction_of_dtype_roof",
    "roofline_limit_examples_per_sec",
    "bound",
    "fraction_of_roofline",
    "matmul_share",
    "matmul_share_as_compiled",
    "serial_limit_examples_per_sec",
    "serial_limit_of_dtype_roof",
    "fraction_of_serial_limit",
    "spread",
    "min",
    "max",
    "rounds",
    "fraction_of_roof_in_turns",
)
ACCURACY_SIDES = ("custom", "keras_fit", "keras_fit_best")
ACCURACY_FIELDS = ("target", "seeds", *ACCURACY_SIDES, "keras_baseline", "speedup_vs_keras_best")
# The README's table: both Keras rows, the plain step, the fastest paths, and what train.py picks.
SUMMARY_VARIANTS = ("keras_fit", "keras_fit_best", "plain", "best_float32", "best_xla", "best")
COLUMNS = (
    "variant",
    "ex/s (median)",
    "spread",
    "min",
    "max",
    "vs faster Keras",
    "of own dtype roof",
    "of roof in turns",
    "of roofline",
    "matmul share",
    "as compiled",
    "serial limit (of own roof)",
)


def load_report(path: str | Path) -> dict:
    """A saved benchmark report, or a one-line error naming what is wrong with the file."""
    try:
        report = json.loads(Path(path).read_text())
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a JSON file: {err}") from None
    missing = missing_fields(report)
    if missing:
        raise UserError(f"{path}: not a current benchmark report (no {', '.join(missing)})")
    return report


def missing_fields(report: object) -> list[str]:
    """The current fields `report` lacks: top-level ones, then those of its rows and its time to
    accuracy (as `results[].field` and `time_to_accuracy.field`)."""
    if not isinstance(report, dict):
        return list(REQUIRED)
    missing = [k for k in REQUIRED if k not in report]
    rows = report["results"] if isinstance(report.get("results"), list) else []
    missing += [
        f"results[].{k}"
        for k in ROW_FIELDS
        if any(not isinstance(r, dict) or k not in r for r in rows)
    ]
    if "time_to_accuracy" in report:
        accuracy = report["time_to_accuracy"]
        missing += [f"time_to_accuracy.{k}" for k in ACCURACY_FIELDS if k not in accuracy]
    return missing


def markdown(report: dict) -> str:
    """Every measured section: the set-up, the roofs, one table per detailed batch size, the sweep,
    scaling and time to accuracy (the last two only when the run measured them)."""
    parts = [summary_table(report), setup_lines(report), *batch_tables(report), sweep_table(report)]
    parts += [scaling_table(report), accuracy_table(report)]
    return "\n\n".join(part for part in parts if part) + "\n"


def setup_lines(report: dict) -> str:
    """The device, software and settings, what Keras at its best was given, then each roof."""
    lines = [
        f"Device: {report['device']}; {gpu_line(report['device_details'])}; TensorFlow "
        f"{report['tensorflow']}, Keras {report['keras']}. Threads: {report['threading']}; "
        f"oneDNN kernels: {report['onednn']}; glibc keeps freed memory: "
        f"{bool(report['allocator'])}. `best` = {report['best']}.",
        f"`keras_fit_best` = {keras_best_line(report['keras_fit_best'])}; ratios are against "
        f"the faster Keras row: {_baselines(report)}.",
    ]
    for dtype, rates in report["compute_flops_per_sec"].items():
        lines.append(
            f"- {dtype} compute roof (2048 square): {rates['square'] / 1e9:.1f} GFLOP/s; "
            f"the step's own matmuls: {_step_rates(rates)}"
        )
    for dtype, rates in report["compute_flops_per_sec_xla"].items():
        lines.append(
            f"- {dtype} matmuls compiled by XLA: 2048 square {rates['square'] / 1e9:.1f} "
            f"GFLOP/s; the step's own matmuls: {_step_rates(rates)}"
        )
    memory = report["memory_bytes_per_sec"]
    lines.append(
        f"- memory roof: {memory['roof'] / 1e9:.1f} GB/s (copy {memory['copy'] / 1e9:.1f}, "
        f"update {memory['update'] / 1e9:.1f})"
    )
    in_turns = ", ".join(
        f"{b}: {v['median'] / 1e9:.1f}" for b, v in report["roof_in_turns_flops_per_sec"].items()
    )
    lines.append(f"- float32 roof timed in the rounds (median GFLOP/s): {in_turns}")
    return "\n".join(lines)


def gpu_line(details: dict) -> str:
    """The GPU and the CUDA/cuDNN versions TensorFlow was built with, or "no GPU"."""
    if details["gpu"] is None:
        return "no GPU"
    build = f"CUDA {details['cuda_build_version']}, cuDNN {details['cudnn_build_version']}"
    return f"GPU {details['gpu']} (compute capability {details['compute_capability']}; {build})"


def keras_best_line(best: dict) -> str:
    """What `fit` at its best was given, in words."""
    return (
        f"`fit` with steps_per_execution={best['steps_per_execution']}, "
        f"jit_compile={best['jit_compile']}, {best['inputs']}"
    )


def _baselines(report: dict) -> str:
    return ", ".join(f"batch {b} `{name}`" for b, name in report["keras_baseline"].items())


def summary_table(report: dict, variants: tuple[str, ...] = SUMMARY_VARIANTS) -> str:
    """The README's table: the main variants at the detailed batch sizes, each rate with its
    spread, against the faster Keras row (named in the head) and against the compute roof of the
    dtype it multiplies in."""
    batches = detailed_batches(report)
    if not batches:  # a report with no rows
        return ""
    row_of = {(r["variant"], r["batch_size"]): r for r in report["results"]}
    head = ["variant"]
    for b in batches:
        baseline = report["keras_baseline"][str(b)]
        head += [f"batch {b}: ex/s (spread)", f"vs `{baseline}`", "of its dtype's roof"]
    rows = []
    for name in variants:
        if any((name, b) not in row_of for b in batches):
            continue
        found = [row_of[name, b] for b in batches]
        cells = [f"`{name}` ({found[0]['dtype']})"]
        for r in found:
            cells += [
                f"{r['examples_per_sec']:,.0f} ({r['spread']:,.0f})",
                f"{r['vs_keras_best']:.2f}x",
                f"{100 * r['fraction_of_dtype_roof']:.1f} %",
            ]
        rows.append(cells)
    return _table(head, rows) if rows else ""


def _step_rates(rates: dict) -> str:
    return ", ".join(
        f"{b}: {v['flops_per_sec'] / 1e9:.1f}" for b, v in rates.items() if b != "square"
    )


def batch_tables(report: dict) -> list[str]:
    """A table of every variant at each batch size where more than the sweep's few ran."""
    return [_batch_table(report, batch) for batch in detailed_batches(report)]


def _batch_table(report: dict, batch: int) -> str:
    line = report["roofline"]["float32"][str(batch)]
    head = (
        f"Batch {batch} (float32 roofline limit {line['limit_examples_per_sec']:,.0f} ex/s, "
        f"{line['bound']}-bound; the faster Keras row: "
        f"`{report['keras_baseline'][str(batch)]}`):"
    )
    rows = [_batch_row(r) for r in report["results"] if r["batch_size"] == batch]
    return head + "\n\n" + _table(list(COLUMNS), rows)


def _batch_row(r: dict) -> list[str]:
    fractions = ("fraction_of_dtype_roof", "fraction_of_roof_in_turns", "fraction_of_roofline")
    return [
        f"`{r['variant']}` ({r['dtype']})",
        f"{r['examples_per_sec']:,.0f}",
        f"{r['spread']:,.0f}",
        f"{r['min']:,.0f}",
        f"{r['max']:,.0f}",
        f"{r['vs_keras_best']:.2f}x",
        *(f"{100 * r[k]:.1f} %" for k in fractions),
        f"{100 * r['matmul_share']:.0f} %",
        f"{100 * r['matmul_share_as_compiled']:.0f} %",
        f"{r['serial_limit_examples_per_sec']:,.0f} ({100 * r['serial_limit_of_dtype_roof']:.1f} %)",
    ]


def sweep_table(report: dict) -> str:
    """Examples/s of the variants that ran at every batch size, beside the limits and the input
    pipeline's own rates."""
    batches = sorted({r["batch_size"] for r in report["results"]})
    if len(batches) < 2:
        return ""
    everywhere = [
        name
        for name in dict.fromkeys(r["variant"] for r in report["results"])
        if sum(r["variant"] == name for r in report["results"]) == len(batches)
    ]
    rate = {(r["variant"], r["batch_size"]): r["examples_per_sec"] for r in report["results"]}
    rows = []
    for b in batches:
        f32, bf16 = (report["roofline"][d][str(b)] for d in ("float32", "bfloat16"))
        inputs = report["input_pipeline"][str(b)]
        rows.append(
            [str(b)]
            + [f"{rate[name, b]:,.0f}" for name in everywhere]
            + [
                f"{f32['limit_examples_per_sec']:,.0f} ({f32['bound']})",
                f"{bf16['limit_examples_per_sec']:,.0f} ({bf16['bound']})",
            ]
            + [f"{inputs[k]['median']:,.0f}" for k in ("tf_data", "device_data")]
        )
    head = ["batch", *(f"`{n}`" for n in everywhere), "float32 roofline limit (bound)"]
    head += ["bfloat16 roofline limit", "tf.data batches/s", "device batches/s"]
    return _table(head, rows)


def scaling_table(report: dict) -> str:
    if "scaling" not in report:
        return ""
    s = report["scaling"]
    rows = [
        [
            str(r["replicas"]),
            str(r["global_batch"]),
            f"{r['examples_per_sec']:,.0f}",
            f"{100 * r['efficiency']:.0f} %",
        ]
        for r in s["rows"]
    ]
    head = f"Scaling ({s['devices']}, {s['per_replica_batch']} per replica):"
    return head + "\n\n" + _table(["replicas", "global batch", "ex/s", "efficiency"], rows)


def accuracy_table(report: dict) -> str:
    if "time_to_accuracy" not in report:
        return ""
    t = report["time_to_accuracy"]
    rows = [_accuracy_row(name, t[name], t["seeds"]) for name in ACCURACY_SIDES]
    head = f"Time to {100 * t['target']:.0f} % validation accuracy, {t['seeds']} seeds:"
    columns = ["", "per seed (s; epochs)", "reached", "median", "olympic mean"]
    speedup = (
        f"\n\nspeed-up against `{t['keras_baseline']}` (medians): {t['speedup_vs_keras_best']:.2f}x"
        if t["speedup_vs_keras_best"]
        else ""
    )
    return head + "\n\n" + _table(columns, rows) + speedup


def _accuracy_row(name: str, side: dict, seeds: int) -> list[str]:
    runs = ", ".join(
        f"{r['seconds']:.1f} ({r['epochs']})" if r["epochs"] else "not reached"
        for r in side["runs"]
    )
    return [
        name,
        runs,
        f"{side['reached']}/{seeds}",
        _seconds(side["median_seconds"]),
        _seconds(side["olympic_mean_seconds"]),
    ]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
