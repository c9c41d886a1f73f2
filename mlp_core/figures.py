"""Matplotlib figures shared by TensorBoard summaries and the analysis reports.

Rendered off-screen (Agg), so they work on servers and in CI.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def digit_grid(images: np.ndarray, titles: Sequence[str], cols: int = 5,
               cell_inches: float = 1.3, title_colors: Sequence[str] | None = None) -> Figure:
    """A grid of 28x28 digits (up to len(images)), each with a short title above it."""
    count = len(images)
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_inches, rows * (cell_inches + 0.25)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < count:
            ax.imshow(np.asarray(images[i]).reshape(28, 28), cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(titles[i], fontsize=9,
                         color=title_colors[i] if title_colors is not None else "black")
    fig.tight_layout()
    return fig


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render and close a figure; returns PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as PNG (closing it) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_to_png(fig, dpi))
    return path
