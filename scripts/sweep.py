"""Search hyperparameters with Optuna; each trial is a normal run under logs/<sweep>/.

python scripts/sweep.py --param lr=log:1e-4:1e-2 --param dropout=0:0.5 --trials 20 --epochs 5
python scripts/sweep.py --param hidden='choice:256|512,256' --workers 2 --run-name widths
python scripts/sweep.py ... --storage postgresql://user:pass@host/db   # several machines

Any train flag (scripts/train.py --help) is the fixed part of every trial. The same command again
continues the sweep; docs/sweeps.md explains the domains and how to read the output.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlp_core.config.cli import ArgumentParser, run_main  # noqa: E402


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        from argparse import ArgumentTypeError

        raise ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    add = parser.add_argument
    add(
        "--param",
        action="append",
        default=[],
        metavar="NAME=DOMAIN",
        help="lo:hi, log:lo:hi, int:lo:hi or choice:A|B",
    )
    add("--trials", type=positive_int, default=20, help="trials to finish (complete or pruned)")
    add("--workers", type=positive_int, default=1, help="trial processes on this machine")
    add("--sampler", choices=("tpe", "random"), default="tpe", help="seeded by --seed")
    add("--no-prune", dest="prune", action="store_false", help="train every trial to the end")
    add("--storage", help="Optuna database URL; default: sqlite in the sweep's directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, train_argv = build_parser().parse_known_args(argv)
    from mlp_core.sweep import report, space, study, workers

    domains = tuple(space.parse_space(args.param))
    spec = study.make_spec(domains, train_argv, args.trials, args.sampler, args.prune, args.storage)
    sweep_dir = Path(spec.sweep_dir)
    loaded = study.load_study(spec, study.open_storage(spec.storage))
    cut = study.cut_trials(loaded, spec)
    print(f"sweep {sweep_dir} ({space.describe(domains)})", flush=True)
    print(
        report.progress_line(loaded, spec.trials) + (f"; resuming {len(cut)} cut" if cut else ""),
        flush=True,
    )
    from mlp_core.sweep.dashboard import write_config

    write_config(sweep_dir, domains)
    workers.run_workers(spec, args.workers, cut)
    print(report.final_report(loaded, spec))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
