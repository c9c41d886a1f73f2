"""Train an MLP on MNIST and write logs/<run-name>/ (config, metrics, checkpoints).

python scripts/train.py                      # the default configuration
python scripts/train.py --hidden 1024 --epochs 5 --optimizer nesterov --lr 0.05
python scripts/train.py --run-name mine --resume   # continue a stopped or killed run
python scripts/train.py --dry-run            # one quick epoch on 1,024 images
python scripts/train.py --preset best        # the recipe of docs/best.md
"""

import sys

from mlp_core.config.cli import ArgumentParser, run_main
from mlp_core.config.config import (
    add_config_flags,
    config_from_args,
    explicit_fields,
    with_overrides,
)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run named by --run-name from its latest checkpoint",
    )
    parser.add_argument("--dry-run", action="store_true", help="one epoch on 1,024 images")
    args = parser.parse_args(argv)
    # A resumed run keeps its saved config, preset values included: no preset applied again.
    config = config_from_args(args, preset=not args.resume)
    if args.dry_run:
        config = with_overrides(config, epochs=1, train_subset=1024)
    from mlp_core.training.console import summary  # TensorFlow loads only after the flags are valid
    from mlp_core.training.loop import train_and_evaluate
    from mlp_core.training.rundir import config_for_resume

    if args.resume:
        config = config_for_resume(config, explicit_fields(args))
    print(summary(train_and_evaluate(config, resume=args.resume)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
