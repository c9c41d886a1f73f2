"""Study a trained run's mistakes on the test set; writes logs/<run>/analysis/.

python scripts/analyze.py --run logs/<run>
"""

import sys
from pathlib import Path

from mlp_core.config.cli import ArgumentParser, run_main


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="run directory, e.g. logs/<run>")
    args = parser.parse_args(argv)
    from mlp_core.analysis.mistakes import ANALYSIS, analyze_run

    numbers = analyze_run(args.run)
    rate = numbers["per_digit_error_rate"][numbers["hardest_digit"]]
    print(
        f"{numbers['misclassified_count']} of {numbers['test_images']:,} test images misclassified; "
        f"hardest digit {numbers['hardest_digit']} ({100 * rate:.2f} % wrong); top confusions "
        + ", ".join(
            f"{c['true']}->{c['predicted']} ({c['count']})" for c in numbers["top_confusions"][:3]
        )
    )
    print(f"report: {args.run / ANALYSIS / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
