"""Matplotlib figures shared by TensorBoard summaries and the analysis reports.

Rendered off-screen (Agg), so they work on servers and in CI.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def digit_grid(
    images: np.ndarray,
    titles: Sequence[str],
    cols: int = 5,
    cell_inches: float = 1.3,
    title_colors: Sequence[str] | None = None,
) -> Figure:
    """A grid of 28x28 digits (up to len(images)), each with a short title above it.

    One mosaic in one axes rather than a subplot per digit: five times faster to draw, which
    matters because TensorBoard gets a new grid every epoch.
    """
    count = len(images)
    rows = max(1, math.ceil(count / cols))
    height = cell_inches + 0.25
    cell_w, cell_h = 32, round(32 * height / cell_inches)  # data units, same aspect as the cell
    mosaic = np.zeros((rows * cell_h, cols * cell_w), np.float32)
    fig = plt.figure(figsize=(cols * cell_inches, rows * height))
    ax = fig.add_axes((0, 0, 1, 1))
    for i in range(count):
        top, left = (i // cols) * cell_h + cell_h - 30, (i % cols) * cell_w + 2
        mosaic[top : top + 28, left : left + 28] = np.asarray(images[i]).reshape(28, 28)
        ax.text(
            left + 14,
            top - 1,
            titles[i],
            ha="center",
            va="bottom",
            fontsize=9,
            color=title_colors[i] if title_colors is not None else "black",
        )
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, aspect="auto", interpolation="nearest")
    ax.axis("off")
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


def confusion_figure(counts: np.ndarray, title: str = "confusion matrix") -> Figure:
    """Counts of true (rows) vs predicted (columns) digits; the diagonal is dimmed so mistakes stand out."""
    off_diagonal = counts * (1 - np.eye(len(counts), dtype=counts.dtype))
    fig = plt.figure(figsize=(5.2, 4.6))
    ax = fig.add_axes((0.1, 0.1, 0.7, 0.82))  # fixed layout: tight_layout costs more than drawing
    image = ax.imshow(off_diagonal, cmap="Reds")
    fig.colorbar(image, cax=fig.add_axes((0.83, 0.1, 0.03, 0.82)), label="mistakes")
    for (row, col), value in np.ndenumerate(counts):
        dark = off_diagonal[row, col] > 0.6 * max(off_diagonal.max(), 1)
        ax.text(
            col,
            row,
            str(value),
            ha="center",
            va="center",
            fontsize=7,
            color="gray" if row == col else "white" if dark else "black",
        )
    ax.set(
        xticks=range(len(counts)),
        yticks=range(len(counts)),
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    return fig
