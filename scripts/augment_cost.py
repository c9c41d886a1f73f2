"""Throughput of one model with and without the augmentation, timed in turns in one process.

python scripts/augment_cost.py --preset best             # the best recipe's model and distortions
python scripts/augment_cost.py --augment affine+elastic --rotate 8 --elastic-alpha 30
"""

import json
import sys

from mlp_core.config.cli import ArgumentParser, run_main
from mlp_core.config.config import add_config_flags, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(parser)
    parser.add_argument("--rounds", type=int, default=7, help="turns of each variant")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if config.augment == "none":
        parser.error("give an --augment (or --preset best) to compare against none")
    from mlp_core.benchmark.augment_cost import augmentation_cost

    result = augmentation_cost(config, args.rounds)
    print(json.dumps(result, indent=2))
    rates = list(result["examples_per_sec"].values())
    print(
        f"augmentation costs {100 * (1 - rates[1] / rates[0]):.0f} % of the throughput",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
