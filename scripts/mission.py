"""The notebook's whole mission in one go: explore MNIST, train the MLP, study its mistakes.

python scripts/mission.py                  # logs/explore/, logs/<timestamp>/ with analysis/
python scripts/mission.py --epochs 5 --run-name quick   # any train.py flag
"""

import sys
from pathlib import Path

from mlp_core.config.cli import ArgumentParser, run_main
from mlp_core.config.config import add_config_flags, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    from mlp_core.analysis.explore import explore, report
    from mlp_core.analysis.mistakes import ANALYSIS, analyze_run
    from mlp_core.core.data import load_mnist
    from mlp_core.training.console import summary
    from mlp_core.training.loop import train_and_evaluate

    explored = Path(config.logdir) / "explore"
    print(report(explore(load_mnist(config.data_dir), explored)), f"\n-> {explored}/\n")
    metrics = train_and_evaluate(config)
    print(summary(metrics))
    numbers = analyze_run(metrics["run_dir"])
    print(
        f"{numbers['misclassified_count']} test images misclassified; hardest digit "
        f"{numbers['hardest_digit']}; report: {Path(metrics['run_dir']) / ANALYSIS / 'report.md'}"
    )
    print(f"TensorBoard: .venv/bin/tensorboard --logdir {config.logdir} --host 127.0.0.1")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
