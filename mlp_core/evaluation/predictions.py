"""Predictions over a whole split and the counts built from them, shared by summaries and analysis."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mlp_core.core.data import NUM_CLASSES, Split
from mlp_core.core.model import MLP
from mlp_core.core.pipeline import FEATURES
from mlp_core.core.step import preprocess


def predict_probabilities(
    model: MLP, images: np.ndarray, normalize: bool, batch_size: int = 2000
) -> np.ndarray:
    """Softmax probabilities [N, 10] for uint8 images [N, 28, 28], with the training preprocessing."""
    chunks = []
    for start in range(0, len(images), batch_size):
        flat = tf.reshape(images[start : start + batch_size], [-1, FEATURES])
        chunks.append(tf.nn.softmax(model(preprocess(flat, normalize), training=False)).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, NUM_CLASSES), np.float32)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """counts[true, predicted] over the 10 digits."""
    counts = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(counts, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return counts


def mistake_titles(split: Split, predicted: np.ndarray, indices: np.ndarray) -> list[str]:
    """'pred 5 / true 3' titles for a grid of misclassified digits."""
    return [f"pred {predicted[i]} / true {split.labels[i]}" for i in indices]
