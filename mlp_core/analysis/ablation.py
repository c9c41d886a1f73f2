"""The notebook's hint as an experiment: the same model and seed trained on [0, 1] and on raw 0..255.

Both runs are ordinary runs (checkpoints, metrics.json, TensorBoard), named `<prefix>-normalized`
and `<prefix>-raw`; the comparison figure and JSON go to `<logdir>/<prefix>-comparison/`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from mlp_core.config.config import Config, with_overrides
from mlp_core.core.errors import DivergedError, UserError
from mlp_core.evaluation.figures import save_figure
from mlp_core.training.loop import train_and_evaluate
from mlp_core.training.rundir import METRICS, read_json, write_json

VARIANTS = {"normalized": True, "raw": False}


def run_variant(config: Config, prefix: str, name: str) -> dict:
    """Train one variant; a diverged run is a result of the experiment, not a failure of it."""
    run_name = f"{prefix}-{name}"
    variant = with_overrides(config, normalize=VARIANTS[name], run_name=run_name)
    try:
        return train_and_evaluate(variant)
    except DivergedError as err:
        metrics = read_json(Path(variant.logdir) / run_name / METRICS)
        return {**metrics, "message": str(err)}


def summary(results: dict[str, dict]) -> dict:
    """Final numbers of both variants and the curves the figure draws."""
    keep = ("status", "test_accuracy", "test_loss", "val_accuracy", "val_loss", "run_dir")
    return {
        name: {
            **{k: m.get(k) for k in keep},
            "val_accuracy_per_epoch": [h.get("val_accuracy") for h in m.get("history", [])],
            "train_loss_per_epoch": [h["train_loss"] for h in m.get("history", [])],
        }
        for name, m in results.items()
    }


def comparison_figure(numbers: dict) -> plt.Figure:
    """Training loss and validation accuracy per epoch, normalized vs raw inputs."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, values in numbers.items():
        epochs = range(1, len(values["train_loss_per_epoch"]) + 1)
        loss_ax.plot(epochs, values["train_loss_per_epoch"], marker="o", label=name)
        acc_ax.plot(epochs, values["val_accuracy_per_epoch"], marker="o", label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    for ax in (loss_ax, acc_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def ablate_normalization(config: Config, prefix: str = "ablate-normalization") -> dict:
    """Train both variants, then write comparison.json and comparison.png; return the numbers."""
    if not config.val_size:
        raise UserError(
            "the normalization experiment compares validation curves: --val-size must be > 0"
        )
    numbers = summary({name: run_variant(config, prefix, name) for name in VARIANTS})
    out = Path(config.logdir) / f"{prefix}-comparison"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "comparison.json", numbers)
    save_figure(comparison_figure(numbers), out / "comparison.png")
    return {"out": str(out), **numbers}
