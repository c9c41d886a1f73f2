"""Train the same model and seed with and without input normalization, and compare.

python scripts/ablate_normalization.py                    # the default config, both ways
python scripts/ablate_normalization.py --epochs 5 --prefix quick
"""

import sys

from mlp_core.config.cli import ArgumentParser, run_main
from mlp_core.config.config import add_config_flags, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(parser)
    parser.add_argument("--prefix", default="ablate-normalization", help="run name prefix")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if not config.normalize:
        parser.error("--no-normalize: the experiment trains both ways itself")
    from mlp_core.analysis.ablation import ablate_normalization

    numbers = ablate_normalization(config, args.prefix)
    for name in ("normalized", "raw"):
        n = numbers[name]
        accuracy = f"{100 * n['test_accuracy']:.2f} %" if n["test_accuracy"] is not None else "none"
        print(f"{name:>10}: status {n['status']}, test accuracy {accuracy}, run {n['run_dir']}")
    print(f"comparison: {numbers['out']}/comparison.png, comparison.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
