"""People's digit images -> MNIST-like 28x28 inputs, the way MNIST itself was made.

MNIST digits are white ink on black, size-normalized to fit a 20x20 box (keeping their aspect
ratio) and centred by centre of mass in a 28x28 field. A phone photo or a drawing is usually dark
ink on light paper, any size, in colour; `mnist_like` undoes each of those differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from mlp_core.core.data import IMAGE_SIDE
from mlp_core.core.errors import UserError

BOX = 20
INK_THRESHOLD = 0.25  # of the strongest ink; fainter pixels do not count towards the bounding box
# Decoding holds several float copies of the image; 50 megapixels (more than a 48 MP phone photo)
# stays within a few GB, while a small file can claim far more (PNG compresses blank areas away).
MAX_PIXELS = 50_000_000
JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers carry the size


def read_image(path: str | Path) -> np.ndarray:
    """Decode a PNG/JPEG/GIF/BMP file into float32 grayscale in [0, 1], alpha composited on white."""
    try:
        data = Path(path).read_bytes()
        check_pixel_count(data, path)
        pixels = tf.io.decode_image(data, expand_animations=False).numpy()
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror}") from None
    except (tf.errors.InvalidArgumentError, ValueError):
        raise UserError(
            f"{path}: not an image TensorFlow can decode (PNG, JPEG, GIF or BMP)"
        ) from None
    if pixels.size == 0:
        raise UserError(f"{path}: empty image")
    pixels = pixels.astype(np.float32) / 255.0
    if pixels.shape[-1] in (2, 4):  # composite the alpha channel onto white paper
        alpha = pixels[..., -1:]
        pixels = pixels[..., :-1] * alpha + (1.0 - alpha)
    if pixels.shape[-1] == 3:
        pixels = pixels @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    return pixels[..., 0]


def check_pixel_count(data: bytes, path: str | Path) -> None:
    """Refuse an image over MAX_PIXELS from its header, before decoding allocates it."""
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise UserError(
            f"{path}: image is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over "
            f"the limit of {MAX_PIXELS:,}; scale it down first"
        )


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF, BMP or JPEG header; None when the header says nothing."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:2] == b"BM" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # the old OS/2 header: 16-bit sizes
            return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)  # negative = top-down rows
        return abs(width), abs(height)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments up to the first start-of-frame, which holds height and width."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in JPEG_SOF and i + 9 <= len(data):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(
                data[i + 5 : i + 7], "big"
            )
        if marker == 0xDA:  # image data starts: no size before it
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def ink(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1] over a zero background, whichever way round the image is drawn."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    strength = background - gray if background > 0.5 else gray - background
    peak = float(strength.max())
    return np.clip(strength / peak, 0.0, 1.0) if peak > 0.05 else np.zeros_like(gray)


def mnist_like(gray: np.ndarray, where: str = "image") -> np.ndarray:
    """Crop to the ink, fit into 20x20 keeping the aspect ratio, centre by mass in 28x28 (uint8)."""
    strength = ink(gray)
    rows, cols = np.nonzero(strength >= INK_THRESHOLD)
    if rows.size == 0:
        raise UserError(f"{where}: no digit found (the image is blank)")
    crop = strength[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = BOX / max(crop.shape)
    size = [max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))]
    digit = tf.image.resize(
        crop[..., None], size, method="area" if scale < 1 else "bilinear", antialias=True
    ).numpy()[..., 0]
    return _centre_by_mass(np.clip(digit, 0.0, 1.0))


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste `digit` into a 28x28 field so that its centre of mass lands on the centre."""
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE), np.float32)
    h, w = digit.shape
    mass_y, mass_x = (np.indices(digit.shape) * digit).reshape(2, -1).sum(1) / max(
        digit.sum(), 1e-6
    )
    centre = IMAGE_SIDE / 2  # where MNIST's centres of mass sit (measured: about 14.0)
    top = int(np.clip(round(centre - mass_y), 0, IMAGE_SIDE - h))
    left = int(np.clip(round(centre - mass_x), 0, IMAGE_SIDE - w))
    field[top : top + h, left : left + w] = digit
    return np.round(field * 255.0).astype(np.uint8)


def load_digit(path: str | Path) -> np.ndarray:
    """An image file as the 28x28 uint8 input the model expects."""
    return mnist_like(read_image(path), str(path))
