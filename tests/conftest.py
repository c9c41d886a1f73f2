"""Shared fixtures: the real MNIST (loaded once) and writers for small IDX/npz files."""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mlp_core  # noqa: F401  (quiet TensorFlow import first)
from mlp_core.config.config import Config
from mlp_core.core.data import FILES, load_mnist

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist():
    return load_mnist()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write `array` (uint8) as an IDX file, gzip-compressed unless told otherwise."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


@pytest.fixture
def small_idx_dir(tmp_path, mnist) -> Path:
    """A directory of four small IDX files (600 train, 100 test) cut from the real data."""
    arrays = {
        "train_images": mnist.train.images[:600],
        "train_labels": mnist.train.labels[:600],
        "test_images": mnist.test.images[:100],
        "test_labels": mnist.test.labels[:100],
    }
    for key, name in FILES.items():
        write_idx(tmp_path / name, arrays[key])
    return tmp_path


def tiny_config(tmp_path: Path, **changes) -> Config:
    """A config that trains in a second or two: 1,024 images, small layers."""
    values = dict(
        epochs=2,
        batch_size=64,
        hidden=(64, 32),
        dropout=0.1,
        lr=3e-3,
        train_subset=1024,
        val_size=1000,
        logdir=str(tmp_path / "logs"),
        run_name="tiny",
        warmup_epochs=0.5,
    )
    values.update(changes)
    return Config(**values)


@contextlib.contextmanager
def tensorboard_server(logdir: Path) -> Iterator[str]:
    """The real `tensorboard` on a free loopback port over `logdir`; yields its `.../data` URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}/data"
    finally:
        process.kill()
        process.wait(timeout=30)


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run scripts/<script> in a subprocess the way a user would."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def script_main(script: str):
    """scripts/<script>'s main, imported in this process (no TensorFlow start-up per call)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"script_{script[:-3]}", ROOT / "scripts" / script
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_here(script: str, *args: str) -> subprocess.CompletedProcess:
    """scripts/<script> as `run_script` runs it, but in this process: for the error paths, which
    stop before training, so they need no TensorFlow start-up of their own."""
    import contextlib
    import io

    from mlp_core.config.cli import run_main

    main = script_main(script)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_main(main, list(args))
        except SystemExit as exit_:  # argparse
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, no traceback, and the message names the cause."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
