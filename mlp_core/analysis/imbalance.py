"""The notebook's imbalance question as an experiment: one digit cut to a tenth of its training
images, then trained plainly, with re-weighted loss, with over-sampling and with augmentation of
the rare digit (alone and on top of over-sampling).

The cut training set is written as a Keras-format mnist.npz (only the training part loses images;
validation and test stay whole), so every variant is an ordinary run reading it with --data-dir.
The rare digit's test recall and precision and the overall accuracy go to a JSON file and a figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from mlp_core.config.config import Config, with_overrides
from mlp_core.core import data as mnist
from mlp_core.evaluation.figures import save_figure
from mlp_core.evaluation.predictions import confusion_matrix, predict_probabilities
from mlp_core.training.loop import load_trained_model, train_and_evaluate
from mlp_core.training.rundir import write_json

RARE_AUGMENT: dict[str, Any] = {
    "augment": "affine+elastic",
    "rotate": 10.0,
    "scale": 0.1,
    "shear": 10.0,
    "translate": 1.0,
    "elastic_sigma": 6.0,
    "elastic_alpha": 34.0,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "reweight": {"class_weights": "balanced"},
    "oversample": {"balance": "oversample"},
    "augment rare": RARE_AUGMENT,
    "oversample + augment rare": dict(balance="oversample", **RARE_AUGMENT),
}


def cut_digit(
    train: mnist.Split, digit: int, keep: float, val_size: int, seed: int = 0
) -> mnist.Split:
    """`train` with all but a random `keep` fraction of `digit`'s images dropped from its training
    part (the last `val_size` images, the validation set, stay)."""
    cut = len(train) - val_size
    labels = train.labels[:cut]
    rng = np.random.default_rng(seed)
    rare = np.flatnonzero(labels == digit)
    dropped = rng.choice(rare, size=len(rare) - round(keep * len(rare)), replace=False)
    kept = np.setdiff1d(np.arange(len(train)), dropped)
    return mnist.Split(train.images[kept], train.labels[kept])


def write_cut_dataset(config: Config, digit: int, keep: float, out: Path) -> Path:
    """mnist.npz with the cut training set and the whole test set; returns its directory."""
    full = mnist.load_mnist(config.data_dir)
    train = cut_digit(full.train, digit, keep, config.val_size, config.seed)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / "mnist.npz",
        x_train=train.images,
        y_train=train.labels,
        x_test=full.test.images,
        y_test=full.test.labels,
    )
    return out


def digit_scores(run_dir: str, test: mnist.Split, digit: int) -> dict:
    """Test recall and precision of `digit`, and overall test accuracy, of a trained run."""
    config, model = load_trained_model(run_dir)
    predicted = predict_probabilities(model, test.images, config.normalize).argmax(1)
    counts = confusion_matrix(test.labels, predicted)
    return {
        "recall": float(counts[digit, digit] / counts[digit].sum()),
        "precision": float(counts[digit, digit] / max(counts[:, digit].sum(), 1)),
        "accuracy": float(np.trace(counts) / counts.sum()),
    }


def ablate_imbalance(
    config: Config,
    digit: int = 9,
    keep: float = 0.1,
    prefix: str = "ablate-imbalance",
    out: str | Path = "docs",
) -> dict:
    """Train every variant on the cut set; write imbalance.json and imbalance.png under `out`."""
    data_dir = write_cut_dataset(config, digit, keep, Path(config.logdir) / f"{prefix}-data")
    cut = mnist.load_mnist(data_dir)
    test = cut.test
    results = {}
    for name, changes in VARIANTS.items():
        changes = {**changes, "augment_digits": str(digit)} if "augment" in changes else changes
        run = with_overrides(
            config, data_dir=str(data_dir), run_name=f"{prefix}-{name.replace(' ', '')}", **changes
        )
        metrics = train_and_evaluate(run)
        results[name] = {
            **digit_scores(metrics["run_dir"], test, digit),
            "run_dir": metrics["run_dir"],
            "flags": {k: v for k, v in changes.items()},
        }
    training = cut.train.labels[: len(cut.train) - config.val_size]
    numbers = {
        "digit": digit,
        "keep": keep,
        "epochs": config.epochs,
        "hidden": list(config.hidden),
        "rare_training_images": int((training == digit).sum()),
        "training_images": len(training),
        "variants": results,
    }
    out = Path(out)
    write_json_to(out / "imbalance.json", numbers)
    save_figure(imbalance_figure(numbers), out / "imbalance.png")
    return numbers


def write_json_to(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, payload)


def imbalance_figure(numbers: dict) -> plt.Figure:
    """Grouped bars: the rare digit's recall and precision, and overall accuracy, per variant."""
    names = sorted(
        numbers["variants"], key=lambda n: list(VARIANTS).index(n) if n in VARIANTS else 99
    )
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(names))
    for i, key in enumerate(("recall", "precision", "accuracy")):
        values = [100 * numbers["variants"][n][key] for n in names]
        bars = ax.bar(
            x + (i - 1) * 0.27,
            values,
            0.27,
            label=f"digit {numbers['digit']} {key}" if key != "accuracy" else "overall accuracy",
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    low = min(100 * v[k] for v in numbers["variants"].values() for k in ("recall", "precision"))
    ax.set(
        xticks=x,
        xticklabels=[n.replace(" + ", "\n+ ") for n in names],
        ylabel="% on the test set",
        ylim=(max(0, low - 5), 100.5),
        title=f"digit {numbers['digit']} cut to {100 * numbers['keep']:.0f} % of its training "
        f"images ({numbers['rare_training_images']}), {numbers['epochs']} epochs",
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
