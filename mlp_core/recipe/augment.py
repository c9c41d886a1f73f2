"""In-graph data augmentation: random affine transforms and Simard's elastic distortions.

Both are maps from each output pixel to a source position in the original image; they are added
into one coordinate field and the image is resampled once (bilinear, zero outside), so combining
them blurs no more than either alone. Everything is a tensor op on a [B, 784] batch, so it runs
inside the compiled train step on the device. The random draws are stateless ops keyed on
(seed, global step, replica): the step counter is checkpointed, so a resumed run draws exactly
the distortions the uninterrupted run would have drawn, and no extra generator state is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from mlp_core.config.config import Config
from mlp_core.core.data import IMAGE_SIDE

KINDS = ("none", "affine", "elastic", "affine+elastic")
CENTER = (IMAGE_SIDE - 1) / 2.0
SALT = 0x5EED  # keeps augmentation draws apart from the shuffling keyed on (seed, epoch)


@dataclass(frozen=True)
class Augmentation:
    """Strengths of the distortions; each random parameter is uniform in [-max, +max]."""

    kind: str = "none"
    rotate: float = 0.0  # degrees
    scale: float = 0.0  # relative, independently for x and y
    shear: float = 0.0  # degrees, horizontal
    translate: float = 0.0  # pixels, each axis
    sigma: float = 4.0  # elastic: width of the Gaussian smoothing the field, pixels
    alpha: float = 34.0  # elastic: scale of the smoothed field, pixels
    seed: int = 0
    digits: tuple[int, ...] = ()  # only images of these classes are distorted; () = all

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def batch(
        self, images: tf.Tensor, one_hot: tf.Tensor, step: tf.Tensor, replica: tf.Tensor | int = 0
    ) -> tf.Tensor:
        """A training batch: distorted, or only its images of `digits` (the others as floats)."""
        warped = self(images, step, replica)
        if not self.digits:
            return warped
        chosen = (
            tf.linalg.matvec(
                one_hot,
                tf.constant([1.0 if c in self.digits else 0.0 for c in range(one_hot.shape[-1])]),
            )
            > 0
        )
        return tf.where(chosen[:, tf.newaxis], warped, tf.cast(images, tf.float32))

    def __call__(
        self, images: tf.Tensor, step: tf.Tensor, replica: tf.Tensor | int = 0
    ) -> tf.Tensor:
        """uint8 [B, 784] -> float32 [B, 784] distorted pixels (still 0..255), drawn for `step`."""
        keys = draw_keys(self.seed, step, replica)
        batch = tf.shape(images)[0]
        ys, xs = pixel_grid()
        sy, sx = (
            tf.broadcast_to(ys, [batch, IMAGE_SIDE, IMAGE_SIDE]),
            tf.broadcast_to(xs, [batch, IMAGE_SIDE, IMAGE_SIDE]),
        )
        if self.kind in ("affine", "affine+elastic"):
            sy, sx = affine_coordinates(random_affine(self, batch, keys[0]))
        if self.kind in ("elastic", "affine+elastic"):
            dy, dx = elastic_field(batch, self.sigma, self.alpha, keys[1])
            sy, sx = sy + dy, sx + dx
        return tf.reshape(
            bilinear(tf.reshape(images, [-1, IMAGE_SIDE, IMAGE_SIDE]), sy, sx),
            [-1, IMAGE_SIDE * IMAGE_SIDE],
        )


def draw_keys(seed: int, step: tf.Tensor, replica: tf.Tensor | int = 0) -> tf.Tensor:
    """Two stateless seeds, a pure function of (seed, step, replica)."""
    key = tf.constant([seed, SALT], tf.int64)
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(replica, tf.int64))
    return tf.random.experimental.stateless_split(key, 2)


def pixel_grid() -> tuple[tf.Tensor, tf.Tensor]:
    """Row and column index of every pixel, as float32 [28, 28] each."""
    line = tf.range(IMAGE_SIDE, dtype=tf.float32)
    return tf.meshgrid(line, line, indexing="ij")


def random_affine(aug: Augmentation, batch: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
    """[B, 2, 3] sampling matrices: source = A @ (pixel - centre) + centre - translation.

    A = rotation @ shear @ diag(1/scale) maps an output pixel to where it comes from, so a digit
    grows with scale > 1, and shifts by +translation (rows, columns)."""
    u = tf.random.stateless_uniform([batch, 6], key, -1.0, 1.0)
    angle, shear = u[:, 0] * math.radians(aug.rotate), u[:, 1] * math.radians(aug.shear)
    zy, zx = 1.0 + u[:, 2] * aug.scale, 1.0 + u[:, 3] * aug.scale
    ty, tx = u[:, 4] * aug.translate, u[:, 5] * aug.translate
    return affine_matrices(angle, shear, zy, zx, ty, tx)


def affine_matrices(angle, shear, zy, zx, ty, tx) -> tf.Tensor:
    """[B, 2, 3] matrices acting on (row, column, 1) from per-image parameters (radians, pixels)."""
    cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
    # rotation [[c, -s], [s, c]] @ shear [[1, 0], [t, 1]] (columns shift with the row) @ 1/zoom
    a = tf.stack(
        [
            tf.stack([(cos - sin * tan) / zy, -sin / zx], -1),
            tf.stack([(sin + cos * tan) / zy, cos / zx], -1),
        ],
        -2,
    )
    offset = (
        CENTER - tf.linalg.matvec(a, tf.fill(tf.shape(a)[:-1], CENTER)) - tf.stack([ty, tx], -1)
    )
    return tf.concat([a, offset[..., tf.newaxis]], -1)


def affine_coordinates(matrices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Source rows and columns [B, 28, 28] of every output pixel under [B, 2, 3] matrices."""
    ys, xs = pixel_grid()
    m = matrices[:, :, :, tf.newaxis, tf.newaxis]
    return (
        m[:, 0, 0] * ys + m[:, 0, 1] * xs + m[:, 0, 2],
        m[:, 1, 0] * ys + m[:, 1, 1] * xs + m[:, 1, 2],
    )


def gaussian_matrix(sigma: float, size: int = IMAGE_SIDE) -> tf.Tensor:
    """G[i, k] = g(i - k), g a Gaussian normalized over all offsets: G @ u smooths each column of u
    with zero padding and no truncation of the kernel (at 28 pixels a matrix is cheaper than a
    convolution whose kernel is as wide as the image)."""
    offsets = tf.range(-(size - 1), size, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / sigma))
    kernel /= tf.reduce_sum(kernel)
    index = tf.range(size)[:, tf.newaxis] - tf.range(size)[tf.newaxis, :] + size - 1
    return tf.gather(kernel, index)


def elastic_field(
    batch: tf.Tensor, sigma: float, alpha: float, key: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Simard's displacement: uniform [-1, 1] per pixel and axis, Gaussian-smoothed, times alpha."""
    raw = tf.random.stateless_uniform([2, batch, IMAGE_SIDE, IMAGE_SIDE], key, -1.0, 1.0)
    g = gaussian_matrix(sigma)
    smooth = alpha * tf.einsum("ik,cbkl,jl->cbij", g, raw, g)
    return smooth[0], smooth[1]


def bilinear(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Sample [B, 28, 28] images at fractional (rows, cols) [B, 28, 28]; outside the image is 0."""
    flat = tf.reshape(tf.cast(images, tf.float32), [-1, IMAGE_SIDE * IMAGE_SIDE])
    r0, c0 = tf.floor(rows), tf.floor(cols)
    wr, wc = rows - r0, cols - c0
    r0, c0 = tf.cast(r0, tf.int32), tf.cast(c0, tf.int32)

    def tap(r: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
        inside = (r >= 0) & (r < IMAGE_SIDE) & (c >= 0) & (c < IMAGE_SIDE)
        index = tf.clip_by_value(r, 0, IMAGE_SIDE - 1) * IMAGE_SIDE + tf.clip_by_value(
            c, 0, IMAGE_SIDE - 1
        )
        values = tf.gather(flat, tf.reshape(index, [tf.shape(index)[0], -1]), batch_dims=1)
        return tf.where(inside, tf.reshape(values, tf.shape(r)), 0.0)

    top = (1.0 - wc) * tap(r0, c0) + wc * tap(r0, c0 + 1)
    bottom = (1.0 - wc) * tap(r0 + 1, c0) + wc * tap(r0 + 1, c0 + 1)
    return (1.0 - wr) * top + wr * bottom


def from_config(config: Config) -> Augmentation:
    """The run's augmentation from its Config fields."""
    digits = tuple(int(d) for d in config.augment_digits.split(",") if d)
    return Augmentation(
        config.augment,
        config.rotate,
        config.scale,
        config.shear,
        config.translate,
        config.elastic_sigma,
        config.elastic_alpha,
        config.seed,
        digits,
    )


def augmented(step: Callable, augmentation: Augmentation, counter: tf.Variable) -> Callable:
    """`step` on distorted batches: the draws are keyed on the step counter (before the step moves
    it) and the replica, so a resumed or replicated run distorts exactly as an unbroken one."""

    def step_on_distorted(images: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return step(augmentation.batch(images, one_hot, counter, replica), one_hot)

    return step_on_distorted
