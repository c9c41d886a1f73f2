"""Precision-recall curves per digit (TensorBoard's PR Curves dashboard), one-vs-rest.

For digit d the classifier's score is its softmax probability of d; a threshold t in [0, 1] calls
every example with a higher score a d. The curves are made from probabilities the observer already
has (the epoch-end pass over the validation set), with numpy, outside the compiled steps.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_summary

from mlp_core.core.data import NUM_CLASSES

THRESHOLDS = 201


def write_pr_curves(labels: np.ndarray, probabilities: np.ndarray, step: int) -> None:
    """One curve per digit (tags `digit_D/pr_curves`) into the default writer at `step`."""
    for digit in range(NUM_CLASSES):
        summary = pr_summary.pb(
            f"digit_{digit}",
            labels == digit,
            probabilities[:, digit].astype(np.float32),
            THRESHOLDS,
            description=f"one-vs-rest: digit {digit} against the other nine",
        )
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
