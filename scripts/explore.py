"""Explore MNIST: counts, shapes, dtypes, labels, pixel statistics, class balance, first 25 images.

python scripts/explore.py                 # prints the numbers, writes logs/explore/
python scripts/explore.py --out DIR --data-dir ../shared/data/mnist
"""

import sys
from pathlib import Path

from mlp_core.config.cli import ArgumentParser, run_main


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("logs/explore"), help="output directory")
    parser.add_argument("--data-dir", help="IDX files or mnist.npz; default: packaged copy")
    args = parser.parse_args(argv)
    from mlp_core.analysis.explore import explore, report
    from mlp_core.core.data import load_mnist

    stats = explore(load_mnist(args.data_dir), args.out)
    print(report(stats))
    print(f"wrote {args.out}/first25.png, class_balance.png, explore.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
