"""Predict digits in people's image files with an exported SavedModel.

Each file is read and made MNIST-like on its own, so one bad file is reported and skipped while the
others are still predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from mlp_core.core.errors import UserError
from mlp_core.evaluation.figures import digit_grid, save_figure
from mlp_core.serving.digits import load_digit


@dataclass(frozen=True)
class Prediction:
    path: str
    digit: int
    probability: float
    top3: list[tuple[int, float]]
    image: np.ndarray  # the 28x28 uint8 input the model saw

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "digit": self.digit,
            "probability": self.probability,
            "top3": [{"digit": d, "probability": p} for d, p in self.top3],
        }

    def __str__(self) -> str:
        top = ", ".join(f"{d} {p:.3f}" for d, p in self.top3)
        return f"{self.path}: {self.digit} (probability {self.probability:.3f}; top 3: {top})"


def predict_files(serve, paths: Sequence[str]) -> tuple[list[Prediction], list[str]]:
    """Predictions for the readable images and one error line for each file that is not."""
    images, kept, errors = [], [], []
    for path in paths:
        try:
            images.append(load_digit(path))
            kept.append(str(path))
        except UserError as err:
            errors.append(str(err))
    if not images:
        return [], errors
    probabilities = serve(images=tf.constant(np.stack(images)))["probabilities"].numpy()
    return [
        _prediction(path, probs, image) for path, probs, image in zip(kept, probabilities, images)
    ], errors


def _prediction(path: str, probabilities: np.ndarray, image: np.ndarray) -> Prediction:
    order = np.argsort(-probabilities, kind="stable")[:3]
    top3 = [(int(d), float(probabilities[d])) for d in order]
    return Prediction(path, top3[0][0], top3[0][1], top3, image)


def save_inputs_figure(predictions: Sequence[Prediction], path: str | Path) -> Path:
    """What the model saw: each preprocessed input titled with its file and prediction."""
    titles = [f"{Path(p.path).name[:14]}\n{p.digit} ({p.probability:.2f})" for p in predictions]
    return save_figure(
        digit_grid(np.stack([p.image for p in predictions]), titles, cols=min(5, len(predictions))),
        path,
    )
