"""Benchmark training throughput: every fast path vs Keras model.fit vs the roofs of the device.

python scripts/benchmark.py                              # batch 128 and 512, this machine's device
python scripts/benchmark.py --batch-sizes 128 --json bench.json --time-to-accuracy 0.98
python scripts/benchmark.py --batch-sizes 32,64,128,256,512,1024,2048,4096 --round-examples 40000
python scripts/benchmark.py --strategy mirrored --logical-cpus 2 --profile /tmp/profile
python scripts/benchmark.py --from-json docs/benchmark.json --markdown /tmp/tables.md  # re-report
"""

import argparse
import json
import sys
from pathlib import Path

from mlp_core.config.cli import ArgumentParser, run_main
from mlp_core.config.config import nonneg_int, positive_int


def batch_sizes(text: str) -> list[int]:
    try:
        return [positive_int(part) for part in text.split(",")]
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers, got {text!r}"
        ) from None


def names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def accuracy(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def threads(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"must be INTER,INTRA (two integers >= 0), got {text!r}")
    return int(parts[0]), int(parts[1])


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--batch-sizes", type=batch_sizes, default=[128, 512])
    add("--device", choices=("auto", "cpu", "gpu"), default="auto")
    add("--steps", type=positive_int, default=600, help="timed steps per round")
    add(
        "--round-examples",
        type=nonneg_int,
        default=0,
        help="instead of --steps: about this many examples per round at every batch size",
    )
    add("--rounds", type=positive_int, default=5, help="rounds; the variants take turns in each")
    add("--warmup", type=positive_int, default=50, help="untimed steps first")
    add(
        "--variants",
        type=names,
        default=(),
        help="comma-separated variants (default: all); both Keras rows always run",
    )
    add(
        "--sweep-variants",
        type=names,
        default=(),
        help="the variants at batch sizes outside --full-at (default: the same as --variants)",
    )
    add(
        "--full-at", type=batch_sizes, default=[128, 512], help="batch sizes that run every variant"
    )
    add("--roof-flops", type=float, default=1e10, help="FLOPs per timing of a compute roof")
    add(
        "--input-batches",
        type=positive_int,
        default=200,
        help="batches per round of the input pipeline alone",
    )
    add("--train-subset", type=nonneg_int, default=0, help="use the first N images only")
    add("--json", type=Path, help="write the results here")
    add("--markdown", type=Path, help="write the tables docs/throughput.md shows here")
    add(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: report a saved run again (tables, --markdown, charts next to FILE)",
    )
    add(
        "--plot",
        type=Path,
        help="bar chart PNG (default: next to --json; also _sweep and roofline charts)",
    )
    add(
        "--time-to-accuracy",
        type=accuracy,
        metavar="ACC",
        help="also time the default config to this validation accuracy vs both Keras rows",
    )
    add("--seeds", type=positive_int, default=1, help="time to accuracy: seeds 0..N-1, each once")
    add(
        "--strategy",
        choices=("default", "mirrored"),
        default="default",
        help="mirrored: also measure scaling over 1..N replicas",
    )
    add(
        "--logical-cpus",
        type=nonneg_int,
        default=0,
        help="without GPUs: scale over 1..N logical CPUs",
    )
    add(
        "--scaling-batch",
        type=positive_int,
        default=128,
        help="per-replica batch of the scaling runs",
    )
    add(
        "--threads",
        type=threads,
        metavar="INTER,INTRA",
        help="TensorFlow's inter-op and intra-op thread pools (default: TensorFlow's choice)",
    )
    add(
        "--profile",
        type=Path,
        metavar="DIR",
        help="profile one more untimed round of each variant here",
    )
    add(
        "--dry-run",
        action="store_true",
        help="every requested mode once at toy sizes (batch 32, 1,024 images, 1 round), to check a set-up",
    )
    return p


def dry_run(args: argparse.Namespace) -> argparse.Namespace:
    """The same modes at toy sizes: the numbers mean nothing, but every code path runs."""
    toy = dict(
        batch_sizes=[32],
        full_at=[32],
        steps=2,
        round_examples=0,
        warmup=1,
        rounds=1,
        train_subset=1024,
        roof_flops=1e7,
        input_batches=2,
        seeds=min(args.seeds, 2),
        logical_cpus=min(args.logical_cpus, 2),
        scaling_batch=32,
    )
    if args.time_to_accuracy:
        toy["time_to_accuracy"] = min(args.time_to_accuracy, 0.5)
    return argparse.Namespace(**(vars(args) | toy))


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Run the benchmark the flags describe."""
    from mlp_core.benchmark.throughput import Plan, run_all

    plan = Plan(
        batch_sizes=tuple(args.batch_sizes),
        steps=args.steps,
        warmup=args.warmup,
        rounds=args.rounds,
        round_examples=args.round_examples,
        variants=args.variants,
        sweep_variants=args.sweep_variants,
        full_at=tuple(args.full_at),
        input_batches=args.input_batches,
        profile=args.profile,
        scaling_batch=args.scaling_batch,
        roof_flops=args.roof_flops,
    )
    report = run_all(
        plan,
        args.device,
        args.train_subset,
        args.time_to_accuracy,
        args.seeds,
        args.strategy,
        args.logical_cpus,
        args.threads,
    )
    report["command"] = "scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    return report


def write_outputs(report: dict, args: argparse.Namespace) -> None:
    """The JSON, the Markdown tables and the three charts, wherever the flags say."""
    from mlp_core.benchmark.markdown import markdown
    from mlp_core.benchmark.report import save_plot, save_roofline_plot, save_sweep_plot

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report))
        print(f"wrote {args.markdown}")
    beside = args.json or args.from_json
    plot = args.plot or (beside.with_suffix(".png") if beside else None)
    if plot:
        for save, suffix in (
            (save_plot, ""),
            (save_sweep_plot, "_sweep"),
            (save_roofline_plot, "_roofline"),
        ):
            print(f"wrote {save(report, plot.with_name(plot.stem + suffix + plot.suffix))}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.dry_run:
        args = dry_run(args)
    from mlp_core.benchmark.markdown import load_report
    from mlp_core.benchmark.report import table

    report = load_report(args.from_json) if args.from_json else measure(args, argv)
    print(table(report))
    write_outputs(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
