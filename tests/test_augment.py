"""Augmentation: the transforms against hand-computed images, the elastic field's statistics, and
the runs that use it (off = today's path, seeded = bit-identical, killed and resumed = identical)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from test_reliability import Crash, CrashAt, weights_of, without_timing

from mlp_core.config.config import with_overrides
from mlp_core.recipe import augment
from mlp_core.recipe.augment import Augmentation, affine_coordinates, affine_matrices, bilinear
from mlp_core.training.loop import train_and_evaluate
from mlp_core.training.trainer import build_trainer

AFFINE = {
    "augment": "affine+elastic",
    "rotate": 10.0,
    "scale": 0.1,
    "shear": 10.0,
    "translate": 2.0,
    "elastic_sigma": 5.0,
    "elastic_alpha": 30.0,
}


def warp(image: np.ndarray, **params: float) -> np.ndarray:
    """One [28, 28] image through the affine sampling with the given parameters."""
    values = {"angle": 0.0, "shear": 0.0, "zy": 1.0, "zx": 1.0, "ty": 0.0, "tx": 0.0, **params}
    matrices = affine_matrices(
        *(tf.constant([values[k]], tf.float32) for k in ("angle", "shear", "zy", "zx", "ty", "tx"))
    )
    rows, cols = affine_coordinates(matrices)
    return bilinear(tf.constant(image[np.newaxis]), rows, cols).numpy()[0]


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8)


def test_identity_returns_the_image_exactly(image):
    np.testing.assert_array_equal(warp(image), image.astype(np.float32))


def test_translations_and_a_quarter_turn_match_hand_computed_images(image):
    right = np.zeros((28, 28), np.float32)
    right[:, 1:] = image[:, :-1]  # one pixel right: the first column comes from outside (zero)
    np.testing.assert_array_equal(warp(image, tx=1.0), right)
    down = np.zeros((28, 28), np.float32)
    down[1:] = image[:-1]
    np.testing.assert_array_equal(warp(image, ty=1.0), down)
    half = (right + image) / 2  # half a pixel: the mean of each pixel and its left neighbour
    np.testing.assert_allclose(warp(image, tx=0.5), half, atol=1e-4)
    np.testing.assert_allclose(warp(image, angle=math.pi / 2), np.rot90(image, -1), atol=1e-3)
    # zoom 2: pixel (0, 0) samples 13.5 + (0 - 13.5) / 2 = 6.75 on both axes
    x = image.astype(np.float64)
    expected = 0.25 * 0.25 * x[6, 6] + 0.25 * 0.75 * (x[6, 7] + x[7, 6]) + 0.75 * 0.75 * x[7, 7]
    assert warp(image, zy=2.0, zx=2.0)[0, 0] == pytest.approx(expected, abs=1e-3)


def elastic(sigma: float, alpha: float, batch: int = 1024) -> np.ndarray:
    dy, dx = augment.elastic_field(batch, sigma, alpha, tf.constant([7, 11], tf.int64))
    return np.stack([dy.numpy(), dx.numpy()])


def test_elastic_field_has_the_predicted_size_and_smoothness():
    sigma, alpha = 4.0, 34.0
    field = elastic(sigma, alpha)[..., 10:18, 10:18]  # interior: the zero padding is far away
    # uniform [-1, 1] has variance 1/3; a normalized 2-D Gaussian keeps 1 / (4 pi sigma^2) of it
    rms = alpha * math.sqrt(1 / 3 / (4 * math.pi * sigma**2))
    assert abs(field.mean()) < 0.1 * rms  # about 4 standard errors: pixels of one field correlate
    assert np.sqrt((field**2).mean()) == pytest.approx(rms, rel=0.05)
    length = np.hypot(field[0], field[1])  # Rayleigh: mean length rms * sqrt(pi / 2)
    assert length.mean() == pytest.approx(rms * math.sqrt(math.pi / 2), rel=0.05)
    # smoothed white noise: neighbours correlate like a Gaussian of width sigma * sqrt(2)
    a, b = field[..., :, :-1].ravel(), field[..., :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(math.exp(-1 / (4 * sigma**2)), abs=0.01)
    rough = elastic(0.3, alpha)[..., 10:18, 10:18]
    assert abs(np.corrcoef(rough[..., :-1].ravel(), rough[..., 1:].ravel())[0, 1]) < 0.1
    np.testing.assert_allclose(elastic(sigma, 2 * alpha), 2 * elastic(sigma, alpha), rtol=1e-5)


def test_draws_are_a_pure_function_of_seed_and_step(image):
    aug = Augmentation(kind="affine+elastic", rotate=10.0, scale=0.1, translate=2.0)
    batch = tf.constant(np.stack([image.ravel()] * 4))
    first, again = aug(batch, tf.constant(5, tf.int64)), aug(batch, tf.constant(5, tf.int64))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), aug(batch, tf.constant(6, tf.int64)).numpy())
    assert not np.array_equal(first[0].numpy(), first[1].numpy())  # each image its own draw
    assert first.numpy().min() >= 0 and first.numpy().max() <= 255


def step_graph(config) -> list[str]:
    """The traced train step as text: its nodes, then its functions in a fixed order, minus the
    numbers TF gives branch functions and custom gradients per process."""
    graph = build_trainer(config, 10).train_step.get_concrete_function().graph.as_graph_def()

    def text(proto) -> str:
        plain = re.sub(r"(cond_(?:true|false))_\d+", r"\1", str(proto))
        return re.sub(r"CustomGradient-\d+", "CustomGradient", plain)

    return [text(node) for node in graph.node] + sorted(text(f) for f in graph.library.function)


def test_augment_none_is_todays_step_whatever_the_strengths(tmp_path):
    """The same graph, op for op and attribute for attribute, so the same bits."""
    plain = tiny_config(tmp_path)
    ignored = with_overrides(plain, **{**AFFINE, "augment": "none"})
    assert step_graph(ignored) == step_graph(plain)
    augmented = step_graph(with_overrides(plain, **AFFINE))
    assert any('op: "StatelessRandomUniformV2"' in part for part in augmented)
    assert augmented != step_graph(plain)


@pytest.mark.parametrize(
    "fast, repeat",
    [
        ({"steps_per_call": 1, "data_on_device": False}, False),
        ({"steps_per_call": 4, "data_on_device": True}, True),
    ],
)
def test_augmented_runs_repeat_bit_for_bit_and_resume_exactly(tmp_path, fast, repeat):
    config = tiny_config(tmp_path, checkpoint_every=5, **AFFINE, **fast)
    alone = train_and_evaluate(with_overrides(config, run_name="alone"), None, observers=[])
    names = ["crashed"]
    if repeat:  # two seeded runs from scratch
        again = train_and_evaluate(with_overrides(config, run_name="again"), None, observers=[])
        assert without_timing(again) == without_timing(alone)
        names.append("again")
    crashed = with_overrides(config, run_name="crashed")
    with pytest.raises(Crash):
        train_and_evaluate(crashed, None, observers=[CrashAt(23)])  # mid-epoch 2, saved at 20
    resumed = train_and_evaluate(crashed, None, observers=[], resume=True)
    assert without_timing(resumed) == without_timing(alone)
    logs = tmp_path / "logs"
    for name in names:
        for a, b in zip(weights_of(logs / name), weights_of(logs / "alone")):
            np.testing.assert_array_equal(a, b)


def test_only_the_chosen_digits_are_distorted(image):
    aug = Augmentation("affine", rotate=20.0, translate=2.0, digits=(1,))
    images = tf.constant(np.stack([image.ravel()] * 4))
    one_hot = tf.one_hot([1, 0, 1, 7], 10)
    out = aug.batch(images, one_hot, tf.constant(3, tf.int64)).numpy()
    np.testing.assert_array_equal(out[[1, 3]], images.numpy()[[1, 3]].astype(np.float32))
    assert not np.array_equal(out[0], images.numpy()[0]) and not np.array_equal(out[0], out[2])


def test_tensorboard_grid_shows_the_same_digits_distorted_anew_each_epoch(tmp_path):
    from types import SimpleNamespace

    from mlp_core.core.data import load_mnist
    from mlp_core.observers.summaries import write_augmented_inputs

    train = load_mnist().test.take(0, 30)
    ctx = SimpleNamespace(
        train=train,
        trainer=SimpleNamespace(
            augment=augment.from_config(with_overrides(tiny_config(tmp_path), **AFFINE))
        ),
    )
    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    for step in (10, 20):
        with writer.as_default(step=step):
            write_augmented_inputs(ctx, step)
    writer.close()
    grids = {}
    for path in (tmp_path / "tb").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "augmented_inputs":
                    grids[event.step] = tf.io.decode_png(tf.make_ndarray(value.tensor)[2]).numpy()
    assert sorted(grids) == [10, 20] and grids[10].shape == grids[20].shape
    assert not np.array_equal(grids[10], grids[20])
    ctx.trainer.augment = Augmentation()  # no augmentation, no grid
    with tf.summary.create_file_writer(str(tmp_path / "none")).as_default(step=10):
        write_augmented_inputs(ctx, 10)
    assert all(
        len(list(tf.compat.v1.train.summary_iterator(str(p)))) == 1  # the file header only
        for p in (tmp_path / "none").iterdir()
    )
