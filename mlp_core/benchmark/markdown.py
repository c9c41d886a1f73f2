"""The benchmark's report as Markdown: the tables docs/throughput.md shows, rendered from the JSON
so that the document and `docs/benchmark.json` always say the same (`benchmark.py --from-json`)."""

from __future__ import annotations

import json
from pathlib import Path

from mlp_core.benchmark.report import detailed_batches
from mlp_core.core.errors import UserError

# What every report has and the tables and charts read; scaling and time to accuracy are optional.
REQUIRED = (
    "device",
    "tensorflow",
    "keras",
    "best",
    "threading",
    "matmul_flops_per_sec",
    "flops_per_example",
    "limit_examples_per_sec",
    "compute_flops_per_sec",
    "memory_bytes_per_sec",
    "roofline",
    "roof_in_turns_flops_per_sec",
    "results",
)
# The README's table: the baseline, the plain step, the fastest paths, and what train.py picks.
SUMMARY_VARIANTS = ("keras_fit", "plain", "best_float32", "best_xla", "best")
COLUMNS = (
    "variant",
    "ex/s (median)",
    "spread",
    "min",
    "max",
    "vs Keras fit",
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
    missing = [k for k in REQUIRED if not isinstance(report, dict) or k not in report]
    if missing:
        raise UserError(f"{path}: not a benchmark report (no {', '.join(missing)})")
    return report


def markdown(report: dict) -> str:
    """Every measured section: the set-up, the roofs, one table per detailed batch size, the sweep,
    scaling and time to accuracy (the last two only when the run measured them)."""
    parts = [summary_table(report), setup_lines(report), *batch_tables(report), sweep_table(report)]
    parts += [scaling_table(report), accuracy_table(report)]
    return "\n\n".join(part for part in parts if part) + "\n"


def setup_lines(report: dict) -> str:
    """The device, software and settings, then each roof as a bullet."""
    lines = [
        f"Device: {report['device']}; TensorFlow {report['tensorflow']}, Keras {report['keras']}. "
        f"Threads: {report['threading']}; oneDNN kernels: {report.get('onednn')}; glibc keeps "
        f"freed memory: {bool(report.get('allocator'))}. `best` = {report['best']}.",
    ]
    for dtype, rates in report["compute_flops_per_sec"].items():
        lines.append(
            f"- {dtype} compute roof (2048 square): {rates['square'] / 1e9:.1f} GFLOP/s; "
            f"the step's own matmuls: {_step_rates(rates)}"
        )
    for dtype, rates in report.get("compute_flops_per_sec_xla", {}).items():
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


def summary_table(report: dict, variants: tuple[str, ...] = SUMMARY_VARIANTS) -> str:
    """The README's table: the main variants at the detailed batch sizes, each rate with its
    spread, against Keras `fit` and against the compute roof of the dtype it multiplies in."""
    batches = detailed_batches(report)
    if not batches:  # a report with no rows
        return ""
    row_of = {(r["variant"], r["batch_size"]): r for r in report["results"]}
    head = ["variant"]
    for b in batches:
        head += [f"batch {b}: ex/s (spread)", "vs Keras `fit`", "of its dtype's roof"]
    rows = []
    for name in variants:
        if any((name, b) not in row_of for b in batches):
            continue
        found = [row_of[name, b] for b in batches]
        cells = [f"`{name}` ({found[0]['dtype']})"]
        for r in found:
            cells += [
                f"{r['examples_per_sec']:,.0f} ({r['spread']:,.0f})",
                f"{r['vs_keras_fit']:.2f}x",
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
        f"{line['bound']}-bound):"
    )
    rows = [
        [
            f"`{r['variant']}` ({r['dtype']})",
            f"{r['examples_per_sec']:,.0f}",
            f"{r['spread']:,.0f}",
            f"{r['min']:,.0f}",
            f"{r['max']:,.0f}",
            f"{r['vs_keras_fit']:.2f}x",
            *(
                f"{100 * r[k]:.1f} %"
                for k in (
                    "fraction_of_dtype_roof",
                    "fraction_of_roof_in_turns",
                    "fraction_of_roofline",
                )
            ),
            f"{100 * r['matmul_share']:.0f} %",
            *_newer_cells(r),
        ]
        for r in report["results"]
        if r["batch_size"] == batch
    ]
    return head + "\n\n" + _table(list(COLUMNS[: len(rows[0])]), rows)


def _newer_cells(row: dict) -> list[str]:
    if "serial_limit_examples_per_sec" not in row:
        return []
    return [
        f"{100 * row['matmul_share_as_compiled']:.0f} %",
        f"{row['serial_limit_examples_per_sec']:,.0f} ({100 * row['serial_limit_of_dtype_roof']:.1f} %)",
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
        inputs = report.get("input_pipeline", {}).get(str(b), {})
        rows.append(
            [str(b)]
            + [f"{rate[name, b]:,.0f}" for name in everywhere]
            + [
                f"{f32['limit_examples_per_sec']:,.0f} ({f32['bound']})",
                f"{bf16['limit_examples_per_sec']:,.0f} ({bf16['bound']})",
            ]
            + [
                f"{inputs[k]['median']:,.0f}" if k in inputs else "-"
                for k in ("tf_data", "device_data")
            ]
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
    t, rows = report["time_to_accuracy"], []
    for name in ("custom", "keras_fit"):
        side = t[name]
        runs = ", ".join(
            f"{r['seconds']:.1f} ({r['epochs']})" if r["epochs"] else "not reached"
            for r in side["runs"]
        )
        rows.append(
            [
                name,
                runs,
                f"{side['reached']}/{t['seeds']}",
                _seconds(side["median_seconds"]),
                _seconds(side["olympic_mean_seconds"]),
            ]
        )
    head = f"Time to {100 * t['target']:.0f} % validation accuracy, {t['seeds']} seeds:"
    columns = ["", "per seed (s; epochs)", "reached", "median", "olympic mean"]
    speedup = f"\n\nspeed-up (medians): {t['speedup']:.2f}x" if t["speedup"] else ""
    return head + "\n\n" + _table(columns, rows) + speedup


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
