"""Two remedies for a class-imbalanced training set: re-weighting the loss, and over-sampling.

Both start from the class counts of the training split. `balanced_class_weights` gives each class
the weight N / (K * n_c), so every class contributes the same total weight and the mean weight
over the training set is 1 (the loss keeps its scale and the learning rate its meaning).
`core.pipeline.oversampling_logits` makes a draw with replacement pick every class equally often; the draw
itself is stateless in (seed, epoch) (see pipeline.epoch_order), so it is deterministic and a
resumed run redraws the same epochs.
"""

from __future__ import annotations

import numpy as np

from mlp_core.core.data import NUM_CLASSES
from mlp_core.core.errors import UserError
from mlp_core.core.pipeline import class_counts


def balanced_class_weights(labels: np.ndarray) -> tuple[float, ...]:
    """N / (K * n_c) per class; a class absent from the training set cannot be balanced."""
    counts = class_counts(labels)
    if (counts == 0).any():
        missing = ", ".join(str(c) for c in np.flatnonzero(counts == 0))
        raise UserError(f"--class-weights balanced: no training images of class {missing}")
    return tuple(float(w) for w in len(labels) / (NUM_CLASSES * counts))
