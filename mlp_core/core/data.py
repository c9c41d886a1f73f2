"""Load MNIST from IDX files (gzip or raw) or a Keras-format mnist.npz, and check it thoroughly.

The four IDX files ship inside the package, so training needs no network. Every problem with a file
becomes a one-line DataError that names the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlp_core.core.errors import DataError

IMAGE_SIDE = 28
NUM_CLASSES = 10
IDX_UBYTE = 0x08
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Split:
    """Images uint8 [N, 28, 28] and labels uint8 [N] of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, start: int, stop: int | None = None) -> Split:
        return Split(self.images[start:stop], self.labels[start:stop])


@dataclass(frozen=True)
class Mnist:
    train: Split
    test: Split


def packaged_dir() -> Path:
    """The directory of the MNIST copy inside the installed package."""
    return Path(str(importlib.resources.files("mlp_core").joinpath("_mnist")))


def load_mnist(data_dir: str | Path | None = None) -> Mnist:
    """Load MNIST from `data_dir` (IDX files or mnist.npz) or, by default, the packaged copy."""
    directory = packaged_dir() if data_dir is None else Path(data_dir)
    if not directory.is_dir():
        raise DataError(f"{directory}: data directory does not exist")
    if (
        not any(_find(directory, name) for name in FILES.values())
        and (directory / "mnist.npz").is_file()
    ):
        npz = directory / "mnist.npz"
        return _validated(*_read_npz(npz), f"{npz} (x_train, y_train)", f"{npz} (x_test, y_test)")
    sums = _read_sums(directory / "SHA256SUMS")
    paths = {key: _require(directory, name) for key, name in FILES.items()}
    arrays = {key: _read_idx(path, sums.get(FILES[key])) for key, path in paths.items()}
    pair = {
        part: f"{directory}/{{{paths[part + '_images'].name}, {paths[part + '_labels'].name}}}"
        for part in ("train", "test")
    }
    return _validated(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        pair["train"],
        pair["test"],
    )


def split_validation(train: Split, val_size: int) -> tuple[Split, Split]:
    """Hold out the last `val_size` training images for validation during training."""
    if not 0 <= val_size < len(train):
        raise DataError(f"--val-size {val_size} must be below the {len(train)} training images")
    cut = len(train) - val_size
    return train.take(0, cut), train.take(cut)


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _require(directory: Path, name: str) -> Path:
    path = _find(directory, name)
    if path is None:
        raise DataError(
            f"{directory / name}[.gz]: file not found (need the four MNIST IDX files "
            "or a mnist.npz)"
        )
    return path


def _read_sums(path: Path) -> dict[str, str]:
    """Parse a SHA256SUMS file (`<hex>  <name>` per line); a missing file means no check."""
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _read_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot read: {err}") from None


def _read_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Parse one IDX file of unsigned bytes, checking header, size and (optionally) SHA-256."""
    data = _read_bytes(path)
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise DataError(f"{path}: SHA-256 does not match SHA256SUMS (file is corrupt or altered)")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    if data[2] != IDX_UBYTE:
        raise DataError(f"{path}: IDX data type 0x{data[2]:02x}, expected 0x08 (unsigned byte)")
    rank = data[3]
    header = 4 + 4 * rank
    if rank == 0 or len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: {'truncated' if len(data) - header < expected else 'oversized'}: "
            f"shape {shape} needs {expected} data bytes, found {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)}")
            x_train, y_train, x_test, y_test = (np.asarray(npz[k]) for k in NPZ_KEYS)
            return x_train, y_train, x_test, y_test
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: cannot read npz: {err}") from None


def _validated(x_train, y_train, x_test, y_test, train_source: str, test_source: str) -> Mnist:
    return Mnist(
        train=_check_split(x_train, y_train, train_source),
        test=_check_split(x_test, y_test, test_source),
    )


def _check_split(images: np.ndarray, labels: np.ndarray, where: str) -> Split:
    """Enforce the invariants the rest of the code relies on: uint8, [N,28,28], [N], labels 0..9."""
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(
            f"{where}: dtype images {images.dtype}, labels {labels.dtype}; expected uint8"
        )
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{where}: images have shape {images.shape}, expected [N, 28, 28]")
    if labels.ndim != 1:
        raise DataError(f"{where}: labels have shape {labels.shape}, expected [N]")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"{where}: no examples")
    if labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{where}: label {labels[bad]} at index {bad} is outside 0..9")
    return Split(images, labels)
