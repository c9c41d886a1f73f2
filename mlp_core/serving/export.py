"""A SavedModel for serving: raw uint8 digits in, probabilities and classes out, in one graph.

The export wraps the trained MLP with the same preprocessing the train step used, so a client
sends pixels exactly as MNIST stores them and needs nothing from this package to use the model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from mlp_core.core.data import IMAGE_SIDE
from mlp_core.core.errors import UserError
from mlp_core.core.model import MLP
from mlp_core.core.pipeline import FEATURES
from mlp_core.core.step import preprocess
from mlp_core.observers.base import Observer, RunContext

SAVED_MODEL = "saved_model"
SIGNATURE = "serving_default"
IMAGES_SPEC = tf.TensorSpec([None, IMAGE_SIDE, IMAGE_SIDE], tf.uint8, name="images")


class ServingModel(tf.Module):
    """What the SavedModel holds: the MLP and a serving function with a fixed signature."""

    def __init__(self, model: MLP, normalize: bool):
        super().__init__(name="serving_model")
        self.model, self.normalize = model, normalize
        self.serve = tf.function(self._serve, input_signature=[IMAGES_SPEC])

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        flat = tf.reshape(images, [-1, FEATURES])
        logits = self.model(preprocess(flat, self.normalize), training=False)
        # Classes come from the logits, as in evaluation, so ties in probability cannot differ.
        return {
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
        }


def export_model(model: MLP, normalize: bool, path: str | Path) -> Path:
    """Write the SavedModel to `path`, replacing any older export only once the new one is whole."""
    path = Path(path)
    serving = ServingModel(model, normalize)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        tf.saved_model.save(serving, str(staging), signatures={SIGNATURE: serving.serve})
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    except (OSError, tf.errors.OpError) as err:
        raise UserError(
            f"{path}: cannot write the SavedModel: {getattr(err, 'message', err)}"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def load_serving(path: str | Path):
    """The `serving_default` function of a SavedModel directory, with a clear error if there is none."""
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise UserError(f"{path}: not a SavedModel directory (no saved_model.pb)")
    try:
        return tf.saved_model.load(str(path)).signatures[SIGNATURE]
    except (KeyError, OSError, ValueError, tf.errors.OpError) as err:
        raise UserError(f"{path}: cannot load the SavedModel: {err}") from None


class ExportObserver(Observer):
    """Exports `<run>/saved_model/` when a run finishes."""

    def on_run_end(self, ctx: RunContext, metrics: dict) -> None:
        export_model(ctx.trainer.eval_model, ctx.config.normalize, ctx.run_dir / SAVED_MODEL)
