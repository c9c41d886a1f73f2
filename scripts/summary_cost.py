"""Measure what the TensorBoard summaries cost: two runs of one config, with and without them, in turns.

python scripts/summary_cost.py --epochs 6          # default config, epochs alternating on/off
"""

import json
import sys
from pathlib import Path

from mlp_core.config.cli import ArgumentParser, run_main
from mlp_core.config.config import add_config_flags, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(parser)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    from mlp_core.benchmark.summary_cost import (
        measure,  # TensorFlow loads only after the flags are valid
    )

    result = measure(config_from_args(args))
    for mode in ("on", "off"):
        r = result[mode]
        print(
            f"summaries {mode:3s}: {r['examples_per_sec']:,.0f} ex/s, {r['epoch_seconds']:.2f} s per epoch "
            f"(medians after epoch 1); run begin {r['run_begin_seconds']:.2f} s, end {r['run_end_seconds']:.2f} s"
        )
        print(
            f"  per-call observer hooks: {r['hook_seconds_in_training']:.3f} s per epoch of training"
        )
        for observer, times in r["epoch_end_seconds"].items():
            if times:
                print(f"  epoch end, {observer}: {times[0]:.3f} s wall, {times[1]:.3f} s CPU")
    print(
        f"throughput cost {100 * result['throughput_cost']:.1f} % (paired epochs: "
        f"{100 * result['paired_throughput_cost']:.1f} %), "
        f"{result['extra_seconds_per_epoch']:.2f} s more wall time per epoch"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
