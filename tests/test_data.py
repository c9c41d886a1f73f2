"""The loader against the published MNIST facts, and every kind of bad file."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SHARED_MNIST, write_idx

from mlp_core.core.data import FILES, load_mnist, packaged_dir, split_validation
from mlp_core.core.errors import DataError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_packaged_mnist_matches_published_facts(mnist):
    assert mnist.train.images.shape == (60000, 28, 28) and mnist.train.images.dtype == np.uint8
    assert mnist.test.images.shape == (10000, 28, 28) and mnist.test.labels.dtype == np.uint8
    assert np.bincount(mnist.train.labels).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.test.labels).tolist() == TEST_COUNTS
    assert mnist.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.train.images.mean() == pytest.approx(33.318, abs=1e-3)


# SHA-256 of the four uncompressed MNIST files, as published with the data set's copies.
MNIST_SHA256 = {
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
}


def test_packaged_files_match_their_sha256sums():
    """The packaged copy stands on its own SHA256SUMS (nothing outside the clone is needed)."""
    listed = dict(
        reversed(line.split())
        for line in (packaged_dir() / "SHA256SUMS").read_text().splitlines()
        if line.strip()
    )
    assert listed == MNIST_SHA256
    for name in FILES.values():
        data = gzip.decompress((packaged_dir() / f"{name}.gz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == MNIST_SHA256[name], name


def test_data_tests_pass_in_a_clone_with_nothing_beside_it(tmp_path):
    """A fresh clone has no ../shared; the data tests must not need it (they skip what does)."""
    clone = tmp_path / "clone"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("mlp_core", "tests"):
        shutil.copytree(ROOT / part, clone / part, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", clone)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_data.py",
            "-k",
            "packaged and not clone",
        ],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout and "failed" not in result.stdout, result.stdout[-2000:]


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no ../shared/data/mnist beside this clone")
def test_packaged_files_are_the_shared_files():
    for name in FILES.values():
        shipped = (packaged_dir() / f"{name}.gz").read_bytes()
        assert gzip.decompress(shipped) == gzip.decompress(
            (SHARED_MNIST / f"{name}.gz").read_bytes()
        )


def test_loads_raw_idx_and_npz(tmp_path, mnist):
    (tmp_path / "raw").mkdir()
    for key, name in FILES.items():
        split, part = key.split("_")
        write_idx(
            tmp_path / "raw" / name, getattr(getattr(mnist, split), part)[:50], compress=False
        )
    raw = load_mnist(tmp_path / "raw")
    assert (
        raw.train.images.shape == (50, 28, 28)
        and raw.test.labels.tolist() == mnist.test.labels[:50].tolist()
    )

    np.savez(
        tmp_path / "mnist.npz",
        x_train=mnist.train.images[:30],
        y_train=mnist.train.labels[:30],
        x_test=mnist.test.images[:20],
        y_test=mnist.test.labels[:20],
    )
    npz = load_mnist(tmp_path)
    assert len(npz.train) == 30 and len(npz.test) == 20
    np.testing.assert_array_equal(npz.train.images, mnist.train.images[:30])


def test_validation_split_is_the_last_images(mnist):
    train, val = split_validation(mnist.train, 10_000)
    assert len(train) == 50_000 and len(val) == 10_000
    np.testing.assert_array_equal(val.labels, mnist.train.labels[50_000:])
    with pytest.raises(DataError, match="val-size"):
        split_validation(mnist.train, 60_000)


def _corrupt(directory, name, transform):
    path = directory / f"{name}.gz"
    path.write_bytes(gzip.compress(transform(gzip.decompress(path.read_bytes()))))
    return path


@pytest.mark.parametrize(
    "name, transform, message",
    [
        ("train-images-idx3-ubyte", lambda b: b"\x12\x34" + b[2:], "bad magic number"),
        ("train-images-idx3-ubyte", lambda b: b[:2] + b"\x0d" + b[3:], "data type 0x0d"),
        ("train-images-idx3-ubyte", lambda b: b[:-100], "truncated"),
        ("t10k-labels-idx1-ubyte", lambda b: b + b"\x00", "oversized"),
        (
            "train-labels-idx1-ubyte",
            lambda b: b[:-1] + b"\x0a",
            "label 10 at index 599 is outside 0..9",
        ),
        (
            "train-labels-idx1-ubyte",
            lambda b: b[:4] + (599).to_bytes(4, "big") + b[8:-1],
            "600 images but 599 labels",
        ),
        (
            "train-images-idx3-ubyte",
            lambda b: (
                b[:4]
                + (600).to_bytes(4, "big")
                + (27).to_bytes(4, "big")
                + (28).to_bytes(4, "big")
                + b[16 : 16 + 600 * 27 * 28]
            ),
            "expected [N, 28, 28]",
        ),
    ],
)
def test_corrupt_files_raise_one_line_errors(small_idx_dir, name, transform, message):
    path = _corrupt(small_idx_dir, name, transform)
    with pytest.raises(DataError) as err:
        load_mnist(small_idx_dir)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert name in str(err.value) or str(small_idx_dir) in str(err.value), path


def test_checksum_mismatch_is_detected(small_idx_dir):
    name = "t10k-labels-idx1-ubyte"
    good = hashlib.sha256(gzip.decompress((small_idx_dir / f"{name}.gz").read_bytes())).hexdigest()
    (small_idx_dir / "SHA256SUMS").write_text(f"{good}  {name}\n")
    load_mnist(small_idx_dir)
    (small_idx_dir / "SHA256SUMS").write_text(f"{'0' * 64}  {name}\n")
    with pytest.raises(DataError, match=f"{name}.gz: SHA-256 does not match"):
        load_mnist(small_idx_dir)


def test_missing_and_unreadable_files(tmp_path, small_idx_dir):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    (small_idx_dir / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*file not found"):
        load_mnist(small_idx_dir)
    (small_idx_dir / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read"):
        load_mnist(small_idx_dir)


def test_bad_npz_files(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="missing arrays y_train, x_test, y_test"):
        load_mnist(tmp_path)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=np.array([{}], dtype=object),
        y_train=np.zeros(1),
        x_test=np.zeros(1),
        y_test=np.zeros(1),
    )
    with pytest.raises(DataError, match="cannot read npz"):
        load_mnist(tmp_path)
    (tmp_path / "mnist.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read npz"):
        load_mnist(tmp_path)
