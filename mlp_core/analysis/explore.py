"""Explore MNIST before learning from it: sizes, types, labels, pixel statistics and class balance.

Everything printed is also written to `explore.json`, so the answers in docs/ cite numbers a reader
can regenerate with `scripts/explore.py`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mlp_core.core.data import NUM_CLASSES, Mnist, Split
from mlp_core.core.errors import UserError
from mlp_core.evaluation.figures import digit_grid, save_figure
from mlp_core.training.rundir import write_json

ISSUES = [
    "images are uint8 in 0..255, not normalized: scale them to [0, 1] before training",
    "labels are integers 0..9, not one-hot: encode them as 10-vectors for a softmax output",
    "images are 28x28 matrices: an MLP needs them flattened to 784-vectors",
]


def split_stats(split: Split) -> dict:
    """Counts, shapes, dtypes, labels and pixel statistics of one split."""
    counts = np.bincount(split.labels, minlength=NUM_CLASSES)
    pixels = split.images.astype(np.float64)
    return {
        "samples": len(split),
        "image_shape": list(split.images.shape),
        "image_dtype": str(split.images.dtype),
        "label_shape": list(split.labels.shape),
        "label_dtype": str(split.labels.dtype),
        "unique_labels": np.unique(split.labels).tolist(),
        "pixel_min": int(split.images.min()),
        "pixel_max": int(split.images.max()),
        "pixel_mean": float(pixels.mean()),
        "pixel_std": float(pixels.std()),
        "label_counts": counts.tolist(),
        "balance_ratio": float(counts.max() / counts.min()),
        "rarest_digit": int(counts.argmin()),
        "commonest_digit": int(counts.argmax()),
    }


def describe(data: Mnist) -> dict:
    return {"train": split_stats(data.train), "test": split_stats(data.test), "issues": ISSUES}


def report(stats: dict) -> str:
    """The numbers as a student would print them in the notebook."""
    lines = []
    for name in ("train", "test"):
        s = stats[name]
        lines += [
            f"{name}: {s['samples']:,} samples; images {s['image_shape']} {s['image_dtype']}, labels "
            f"{s['label_shape']} {s['label_dtype']}, unique labels {s['unique_labels']}",
            f"  pixels {s['pixel_min']}..{s['pixel_max']}, mean {s['pixel_mean']:.2f}, "
            f"std {s['pixel_std']:.2f}",
            f"  per-label counts {s['label_counts']}; max/min = {s['balance_ratio']:.3f} "
            f"(most {s['commonest_digit']}, fewest {s['rarest_digit']})",
        ]
    return "\n".join(
        lines + ["issues to deal with:"] + [f"  - {issue}" for issue in stats["issues"]]
    )


def balance_figure(stats: dict):
    """Train and test images per digit, side by side."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    digits = np.arange(NUM_CLASSES)
    for offset, name in ((-0.2, "train"), (0.2, "test")):
        ax.bar(digits + offset, stats[name]["label_counts"], width=0.4, label=name)
    ax.set(xticks=digits, xlabel="digit", ylabel="images", title="class balance")
    ax.legend()
    fig.tight_layout()
    return fig


def explore(data: Mnist, out: str | Path) -> dict:
    """Write first25.png, class_balance.png and explore.json into `out`; return the statistics."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the output directory: {err.strerror}") from None
    stats = describe(data)
    titles = [f"label {label}" for label in data.train.labels[:25]]
    save_figure(digit_grid(data.train.images[:25], titles), out / "first25.png")
    save_figure(balance_figure(stats), out / "class_balance.png")
    write_json(out / "explore.json", stats)
    return stats
