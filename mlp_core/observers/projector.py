"""The embedding projector: the last hidden layer's view of the test digits, at the end of a run.

Everything goes into `<run>/test/`, next to the test scalars: `embedding-1.*` (a tf.train.Checkpoint
holding one [N, units] variable) with its `checkpoint` state file, `metadata.tsv` (true label,
predicted label, correct) and `sprite.png` (the digits, 28x28 each). TensorBoard's projector finds
the checkpoint through that state file, so the run directory can be moved; the config names the
metadata and sprite relative to itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

from mlp_core.core.data import Split
from mlp_core.core.model import MLP
from mlp_core.core.pipeline import FEATURES
from mlp_core.core.step import preprocess
from mlp_core.observers.base import Observer, RunContext

MAX_POINTS = 10_000
TENSOR_NAME = "embedding/.ATTRIBUTES/VARIABLE_VALUE"


def last_hidden(
    model: MLP, images: np.ndarray, normalize: bool, batch_size: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """The last hidden layer's activations [N, units] (dropout off) and the predicted labels."""
    features, predicted = [], []
    for start in range(0, len(images), batch_size):
        flat = tf.reshape(images[start : start + batch_size], [-1, FEATURES])
        outputs = model.forward(preprocess(flat, normalize), training=False)
        features.append(outputs[-2].numpy())
        predicted.append(tf.argmax(outputs[-1], axis=1).numpy())
    return np.concatenate(features), np.concatenate(predicted)


def sprite(images: np.ndarray) -> np.ndarray:
    """One square uint8 mosaic of 28x28 digits in row-major order (the projector's sprite layout),
    dark strokes on white so they read on the projector's white background."""
    side = math.ceil(math.sqrt(len(images)))
    padded = np.zeros((side * side, 28, 28), np.uint8)
    padded[: len(images)] = images
    mosaic = padded.reshape(side, side, 28, 28).transpose(0, 2, 1, 3).reshape(side * 28, side * 28)
    return 255 - mosaic


def write_metadata(path: Path, labels: np.ndarray, predicted: np.ndarray) -> None:
    rows = [f"{t}\t{p}\t{'yes' if t == p else 'no'}" for t, p in zip(labels, predicted)]
    path.write_text("\n".join(["label\tpredicted\tcorrect", *rows]) + "\n")


def write_projector(
    directory: Path, model: MLP, split: Split, normalize: bool, limit: int = MAX_POINTS
) -> int:
    """Write the first `limit` digits of `split` for the projector into `directory`; returns N."""
    images, labels = split.images[:limit], split.labels[:limit]
    features, predicted = last_hidden(model, images, normalize)
    directory.mkdir(parents=True, exist_ok=True)
    tf.train.Checkpoint(embedding=tf.Variable(features)).save(str(directory / "embedding"))
    write_metadata(directory / "metadata.tsv", labels, predicted)
    tf.io.write_file(str(directory / "sprite.png"), tf.io.encode_png(sprite(images)[..., None]))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add(tensor_name=TENSOR_NAME, metadata_path="metadata.tsv")
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([28, 28])
    projector.visualize_embeddings(str(directory), config)
    return len(labels)


class ProjectorObserver(Observer):
    """At the end of a run: the test digits' last hidden layer, for PCA, t-SNE and UMAP views.
    A model without hidden layers has nothing to show and writes nothing."""

    def on_run_end(self, ctx: RunContext, metrics: dict) -> None:
        if len(ctx.trainer.model.layers) > 1:
            write_projector(
                ctx.run_dir / "test", ctx.trainer.eval_model, ctx.test, ctx.config.normalize
            )
