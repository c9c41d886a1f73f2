"""Benchmark training throughput: every fast path vs Keras model.fit vs the compute-bound limit.

    python scripts/benchmark.py                              # batch 128 and 512, this machine's device
    python scripts/benchmark.py --batch-sizes 128 --json bench.json --time-to-accuracy 0.98
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlp_core.config import _positive_int  # noqa: E402
from mlp_core.errors import ArgumentParser, run_main  # noqa: E402


def batch_sizes(text: str) -> list[int]:
    try:
        return [_positive_int(part) for part in text.split(",")]
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=batch_sizes, default=[128, 512])
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--steps", type=_positive_int, default=600, help="timed steps per round (variants take 5 rounds in turns)")
    parser.add_argument("--warmup", type=_positive_int, default=50, help="untimed steps first")
    parser.add_argument("--train-subset", type=int, default=0, help="use the first N images only")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="bar chart PNG (default: next to --json)")
    parser.add_argument("--time-to-accuracy", type=float, metavar="ACC",
                        help="also time the default config to this validation accuracy vs Keras fit")
    args = parser.parse_args(argv)
    from mlp_core.benchmark import run_all, save_plot, table
    report = run_all(args.batch_sizes, args.device, args.steps, args.warmup, args.train_subset,
                     args.time_to_accuracy)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    plot = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if plot:
        print(f"wrote {save_plot(report, plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
