"""Export a run's latest checkpoint as a SavedModel (for runs stopped before their own export).

python scripts/export.py --run logs/<run>            # writes logs/<run>/saved_model/
python scripts/export.py --run logs/<run> --out DIR  # somewhere else
"""

import sys
from pathlib import Path

from mlp_core.config.cli import ArgumentParser, run_main


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="run directory, e.g. logs/<run>")
    parser.add_argument("--out", type=Path, help="SavedModel directory; default <run>/saved_model")
    args = parser.parse_args(argv)
    from mlp_core.serving.export import SAVED_MODEL, export_model
    from mlp_core.training.loop import load_trained_model
    from mlp_core.training.rundir import load_config, run_lock

    load_config(args.run)  # a clear error for a path that is not a run
    with run_lock(args.run):  # not while a trainer (or another export) is writing the run
        config, model = load_trained_model(args.run)
        print(
            f"exported {export_model(model, config.normalize, args.out or args.run / SAVED_MODEL)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
