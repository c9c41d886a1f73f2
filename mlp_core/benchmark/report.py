"""The benchmark's report: fixed-width tables and the charts (bars per batch size, the batch sweep,
the roofline)."""

from __future__ import annotations

from pathlib import Path

from mlp_core.benchmark.roofs import matmul_flops, step_bytes, step_matmul_shapes

# The lines of the sweep and roofline charts, where a run has them at more than one batch size.
SWEEP_LINES = (
    "keras_fit",
    "keras_fit_best",
    "plain",
    "best_float32",
    "best_xla",
    "mixed_bfloat16",
    "best",
)
# One colour per variant in both charts (and red for the limits), so they read together.
LINE_COLORS = dict(zip(SWEEP_LINES, ("gray", "black", "C0", "C1", "C2", "C4", "C3")))


def table(report: dict) -> str:
    """The results, the roofs and the extra modes as text."""
    lines = [
        f"{report['device']}; TensorFlow {report['tensorflow']}; matmul "
        f"{report['matmul_flops_per_sec'] / 1e9:.0f} GFLOP/s; {report['flops_per_example'] / 1e6:.2f} "
        "MFLOP per training example",
        f"best = {report['best']}",
        f"keras_fit_best = fit with {_keras_best(report['keras_fit_best'])}",
        f"oneDNN kernels: {report['onednn']}; glibc keeps freed memory: "
        f"{bool(report['allocator'])}",
        *roof_lines(report),
        f"{'variant':<16}{'batch':>6}{'examples/s':>12}{'spread':>8}{'min':>9}{'max':>9}"
        f"{'vs keras':>10}{'of limit':>10}{'of roof':>9}{'in turns':>9}{'of line':>9}{'matmul':>8}"
        f"{'compiled':>9}{'serial':>8}",
    ]
    lines += [_row_line(r) for r in report["results"]]
    lines.append(
        "vs keras: against the faster Keras row at that batch size "
        f"({', '.join(f'{b}: {name}' for b, name in report['keras_baseline'].items())}); "
        "of roof: of the compute roof of the variant's dtype; in turns: of the float32 "
        "roof timed in the same rounds; of line: of the roofline limit; matmul: the step's "
        "matmuls alone (the graph's kernels) / the step; compiled: the same, with the matmuls "
        "compiled as the variant compiles them (XLA's kernels for XLA variants); serial: of the "
        "serial limit (those matmuls, then the optimizer's pass at the memory roof)"
    )
    return "\n".join(lines + input_lines(report) + scaling_lines(report) + accuracy_lines(report))


def _row_line(r: dict) -> str:
    return (
        f"{r['variant']:<16}{r['batch_size']:>6}{r['examples_per_sec']:>12,.0f}{r['spread']:>8,.0f}"
        f"{r['min']:>9,.0f}{r['max']:>9,.0f}{r['vs_keras_best']:>9.2f}x"
        f"{100 * r['fraction_of_limit']:>9.1f}%{100 * r['fraction_of_dtype_roof']:>8.1f}%"
        f"{100 * r['fraction_of_roof_in_turns']:>8.1f}%"
        f"{100 * r['fraction_of_roofline']:>8.1f}%{100 * r['matmul_share']:>7.0f}%"
        f"{100 * r['matmul_share_as_compiled']:>8.0f}%"
        f"{100 * r['fraction_of_serial_limit']:>7.0f}%"
    )


def _keras_best(best: dict) -> str:
    return (
        f"steps_per_execution={best['steps_per_execution']}, jit_compile={best['jit_compile']}, "
        f"{best['inputs']}"
    )


def roof_lines(report: dict) -> list[str]:
    memory = report["memory_bytes_per_sec"]
    lines = [
        f"memory roof {memory['roof'] / 1e9:.1f} GB/s (copy {memory['copy'] / 1e9:.1f}, "
        f"update {memory['update'] / 1e9:.1f})"
    ]
    for label, key in (
        ("roof", "compute_flops_per_sec"),
        ("under XLA", "compute_flops_per_sec_xla"),
    ):
        for dtype, rates in report[key].items():
            steps = ", ".join(
                f"{b}: {v['flops_per_sec'] / 1e9:.0f}" for b, v in rates.items() if b != "square"
            )
            lines.append(
                f"{dtype} {label} {rates['square'] / 1e9:.0f} GFLOP/s (square); "
                f"step matmuls by batch {steps}"
            )
    for dtype, per_batch in report["roofline"].items():
        lines.append(
            f"{dtype} roofline ex/s: "
            + ", ".join(
                f"{b}: {v['limit_examples_per_sec']:,.0f} ({v['bound']})"
                for b, v in per_batch.items()
            )
        )
    return lines


def input_lines(report: dict) -> list[str]:
    return [
        f"input pipeline alone, batch {b}: tf.data {v['tf_data']['median']:,.0f} batches/s, "
        f"device data {v['device_data']['median']:,.0f} batches/s"
        for b, v in report["input_pipeline"].items()
    ]


def scaling_lines(report: dict) -> list[str]:
    if "scaling" not in report:
        return []
    s = report["scaling"]
    return [f"scaling (mirrored, {s['devices']}, batch {s['per_replica_batch']} per replica):"] + [
        f"  {r['replicas']} replica(s): {r['examples_per_sec']:,.0f} ex/s, efficiency "
        f"{100 * r['efficiency']:.0f} %"
        for r in s["rows"]
    ]


def accuracy_lines(report: dict) -> list[str]:
    if "time_to_accuracy" not in report:
        return []
    t = report["time_to_accuracy"]
    lines = [f"time to {100 * t['target']:.1f} % validation accuracy over {t['seeds']} seed(s):"]
    for name in ("custom", "keras_fit", "keras_fit_best"):
        side = t[name]
        times = ", ".join(
            f"{r['seconds']:.1f}" if r["epochs"] else "not reached" for r in side["runs"]
        )
        median = "-" if side["median_seconds"] is None else f"{side['median_seconds']:.1f} s"
        olympic = (
            "-" if side["olympic_mean_seconds"] is None else f"{side['olympic_mean_seconds']:.1f} s"
        )
        lines.append(f"  {name}: {times}; median {median}, olympic mean {olympic}")
    if t["speedup_vs_keras_best"]:
        lines.append(
            f"  speed-up against {t['keras_baseline']} (medians): {t['speedup_vs_keras_best']:.2f}x"
        )
    return lines


def save_plot(report: dict, path: str | Path) -> Path:
    """Bars of examples/s per variant at each detailed batch size (every variant ran there)."""
    import matplotlib.pyplot as plt

    from mlp_core.evaluation.figures import save_figure

    batches = detailed_batches(report)[:3]
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        _bars(ax, report, batch)
    fig.tight_layout()
    return save_figure(fig, path)


def detailed_batches(report: dict) -> list[int]:
    """The batch sizes at which every variant ran (--full-at), not only the sweep's few."""
    counts: dict[int, int] = {}
    for r in report["results"]:
        counts[r["batch_size"]] = counts.get(r["batch_size"], 0) + 1
    return [b for b, n in counts.items() if n == max(counts.values())]


def _bars(ax, report: dict, batch: int) -> None:
    rows = [r for r in report["results"] if r["batch_size"] == batch]
    ax.barh(
        [r["variant"] for r in rows],
        [r["examples_per_sec"] for r in rows],
        xerr=[r["spread"] for r in rows],
        color=["gray" if r["variant"].startswith("keras_fit") else "tab:blue" for r in rows],
    )
    limit = report["limit_examples_per_sec"][str(batch)]
    ax.axvline(limit, color="red", linestyle="--", label="float32 compute-bound limit")
    line = report["roofline"]["float32"][str(batch)]["limit_examples_per_sec"]
    ax.axvline(line, color="black", linestyle=":", label="float32 roofline limit")
    if any(r["dtype"] == "bfloat16" for r in rows):  # each variant has its own dtype's limit
        half = report["roofline"]["bfloat16"][str(batch)]["limit_examples_per_sec"]
        ax.axvline(half, color="purple", linestyle="-.", label="bfloat16 roofline limit")
        line = max(line, half)
    ax.set(title=f"batch {batch}", xlabel="training examples/s")
    ax.xaxis.set_major_formatter(lambda value, _: f"{value / 1000:.0f}k")
    ax.invert_yaxis()
    ax.set_xlim(
        0, 1.5 * max(limit, line, *(r["examples_per_sec"] for r in rows))
    )  # room for the legend
    ax.legend(loc="upper right")


def sweep_lines(report: dict, least: int = 2) -> list[str]:
    """The charts' variants (SWEEP_LINES) that ran at `least` batch sizes or more: a line needs
    two, a roofline point one."""
    batches = {name: 0 for name in SWEEP_LINES}
    for r in report["results"]:
        if r["variant"] in batches:
            batches[r["variant"]] += 1
    return [name for name, count in batches.items() if count >= least]


def save_sweep_plot(report: dict, path: str | Path) -> Path:
    """Examples/s against batch size (log axis) for the main variants, Keras fit and the rooflines."""
    import matplotlib.pyplot as plt

    from mlp_core.evaluation.figures import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in sweep_lines(report):
        rows = sorted(
            (r["batch_size"], r["examples_per_sec"])
            for r in report["results"]
            if r["variant"] == name
        )
        ax.plot(*zip(*rows), marker="o", label=name, color=LINE_COLORS[name])
    for dtype, style in (("float32", "--"), ("bfloat16", ":")):
        per_batch = sorted(
            (int(b), v["limit_examples_per_sec"]) for b, v in report["roofline"][dtype].items()
        )
        ax.plot(*zip(*per_batch), color="red", linestyle=style, label=f"{dtype} roofline limit")
    ax.set(xscale="log", xlabel="batch size", ylabel="training examples/s", title="batch sweep")
    ax.set_xticks(sorted({r["batch_size"] for r in report["results"]}))
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:.0f}")
    ax.yaxis.set_major_formatter(lambda value, _: f"{value / 1000:.0f}k")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_roofline_plot(report: dict, path: str | Path) -> Path:
    """The classic roofline: GFLOP/s against FLOPs per byte moved, each roof and every measured
    variant at every batch size (its step's FLOPs and least bytes, at the rate it ran)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from mlp_core.evaluation.figures import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    bandwidth = report["memory_bytes_per_sec"]["roof"]
    intensity = np.logspace(0, 3, 100)
    for dtype, rates in report["compute_flops_per_sec"].items():
        ax.plot(
            intensity,
            np.minimum(rates["square"], bandwidth * intensity) / 1e9,
            color="red",
            linestyle="--" if dtype == "float32" else ":",
            label=f"{dtype} roof",
        )
    for name in sweep_lines(report, least=1):
        points = [
            (
                _intensity(r["batch_size"], r["dtype"]),
                r["examples_per_sec"] * report["flops_per_example"] / 1e9,
            )
            for r in report["results"]
            if r["variant"] == name
        ]
        ax.plot(
            *zip(*sorted(points)), marker="o", linewidth=0.8, label=name, color=LINE_COLORS[name]
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="FLOPs per byte of the least memory traffic",
        ylabel="GFLOP/s",
        title="roofline (points: batch sizes, left to right small to large)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _intensity(batch: int, dtype: str) -> float:
    from mlp_core.benchmark.variants import REFERENCE

    act = 2 if dtype in ("bfloat16", "float16") else 4
    return (
        matmul_flops(step_matmul_shapes(REFERENCE, batch))
        / step_bytes(REFERENCE, batch, act)["total"]
    )
