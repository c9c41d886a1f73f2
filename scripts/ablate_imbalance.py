"""Cut one digit to 10 % of its training images; compare plain, re-weighted, over-sampled and
augmented training on that digit's test recall and precision (docs/imbalance.json, .png).

    python scripts/ablate_imbalance.py --epochs 5            # digit 9, the default model
    python scripts/ablate_imbalance.py --digit 5 --keep 0.05 --out /tmp/imbalance
"""

import sys

from mlp_core.config.cli import ArgumentParser, run_main
from mlp_core.config.config import add_config_flags, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(parser)
    parser.add_argument("--digit", type=int, choices=range(10), default=9, help="the rare digit")
    parser.add_argument("--keep", type=float, default=0.1, help="fraction of its images kept")
    parser.add_argument("--prefix", default="ablate-imbalance", help="run name prefix")
    parser.add_argument("--out", default="docs", help="directory for imbalance.json and .png")
    args = parser.parse_args(argv)
    if not 0 < args.keep <= 1:
        parser.error(f"--keep must be in (0, 1], got {args.keep}")
    config = config_from_args(args)
    if not config.val_size:  # checked after the preset, which may set it
        parser.error("--val-size must be > 0: the cut applies to the training part only")
    from mlp_core.analysis.imbalance import ablate_imbalance

    numbers = ablate_imbalance(config, args.digit, args.keep, args.prefix, args.out)
    print(
        f"digit {args.digit}: {numbers['rare_training_images']} of {numbers['training_images']} "
        f"training images"
    )
    for name, v in numbers["variants"].items():
        print(
            f"{name:>26}: recall {100 * v['recall']:.2f} %, precision {100 * v['precision']:.2f} %, "
            f"accuracy {100 * v['accuracy']:.2f} %"
        )
    print(f"written: {args.out}/imbalance.json, {args.out}/imbalance.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
