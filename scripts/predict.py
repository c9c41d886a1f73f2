"""Predict the digit in your own images (PNG/JPEG, any size or colour) with an exported model.

python scripts/predict.py --model logs/<run>/saved_model my_seven.png photo.jpg
python scripts/predict.py --model logs/<run>/saved_model --json --show seen.png *.png
"""

import json
import sys
from pathlib import Path

from mlp_core.config.cli import ArgumentParser, run_main


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="a SavedModel directory")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    parser.add_argument("--show", type=Path, metavar="PNG", help="also draw what the model saw")
    parser.add_argument("images", nargs="+", help="image files")
    args = parser.parse_args(argv)
    from mlp_core.serving.export import load_serving
    from mlp_core.serving.predict import predict_files, save_inputs_figure

    predictions, errors = predict_files(load_serving(args.model), args.images)
    if args.json:
        print(json.dumps([p.to_json() for p in predictions], indent=2))
    else:
        print("\n".join(str(p) for p in predictions))
    if args.show and predictions:
        print(
            f"inputs as the model saw them: {save_inputs_figure(predictions, args.show)}",
            file=sys.stderr,
        )
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
