"""The SavedModel a run exports, and predictions on people's image files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, assert_clean_error, run_here, run_script, tiny_config

from mlp_core.serving.digits import load_digit
from mlp_core.serving.export import SAVED_MODEL, load_serving
from mlp_core.training.loop import load_trained_model, train_and_evaluate

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out

RELOAD = """
import sys, numpy as np, tensorflow as tf
from mlp_core.core.data import load_mnist

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
test = load_mnist().test
classes = np.concatenate([serve(images=tf.constant(test.images[i:i + 1000]))["classes"].numpy()
                          for i in range(0, len(test), 1000)])
print(int((classes == test.labels).sum()))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small model trained to about 95 %, exported by the run itself."""
    config = tiny_config(
        tmp_path_factory.mktemp("export"),
        hidden=(128,),
        train_subset=12000,
        batch_size=100,
        epochs=2,
        dropout=0.0,
    )
    metrics = train_and_evaluate(config)
    return metrics, Path(metrics["run_dir"])


def test_fresh_process_reproduces_the_reported_test_accuracy(run, mnist):
    metrics, run_dir = run
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(run_dir / SAVED_MODEL)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    correct = int(result.stdout.strip().splitlines()[-1])
    assert correct / len(mnist.test) == metrics["test_accuracy"]
    assert metrics["test_accuracy"] > 0.9


def test_saved_predictions_equal_the_in_memory_model(run, mnist):
    _, run_dir = run
    config, model = load_trained_model(run_dir)
    serve = load_serving(run_dir / SAVED_MODEL)
    images = mnist.test.images[:2000]
    saved = serve(images=tf.constant(images))
    logits = model(tf.cast(images.reshape(-1, 784), tf.float32) / 255.0)
    np.testing.assert_allclose(
        saved["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-6
    )
    np.testing.assert_array_equal(saved["classes"].numpy(), np.argmax(logits, 1))


def test_signature_names_dtypes_and_shapes(run):
    _, run_dir = run
    serve = load_serving(run_dir / SAVED_MODEL)
    (spec,) = serve.structured_input_signature[1].values()
    assert (
        spec.name == "images" and spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28]
    )
    outputs = serve.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32
    assert outputs["probabilities"].shape.as_list() == [None, 10]
    assert outputs["classes"].dtype == tf.int64 and outputs["classes"].shape.as_list() == [None]
    cli = shutil.which("saved_model_cli", path=str(Path(sys.executable).parent))
    if cli:
        shown = subprocess.run(
            [
                cli,
                "show",
                "--dir",
                str(run_dir / SAVED_MODEL),
                "--tag_set",
                "serve",
                "--signature_def",
                "serving_default",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "inputs['images']" in shown.stdout and "DT_UINT8" in shown.stdout, shown.stderr
        assert "outputs['classes']" in shown.stdout and "DT_INT64" in shown.stdout


def as_photo(digit: np.ndarray, scale: int = 4, paper: int = 235) -> np.ndarray:
    """An MNIST digit as people draw it: dark ink on light paper, larger, off-centre, in RGB."""
    ink = np.kron(digit.astype(np.float32) / 255.0, np.ones((scale, scale), np.float32))
    page = np.full((ink.shape[0] + 60, ink.shape[1] + 100), 1.0, np.float32)
    page[20 : 20 + ink.shape[0], 70 : 70 + ink.shape[1]] = 1.0 - ink
    gray = np.round(page * paper).astype(np.uint8)
    return np.stack([gray, gray, np.round(gray * 0.95).astype(np.uint8)], axis=-1)


@pytest.fixture(scope="module")
def photos(run, mnist, tmp_path_factory):
    """Files of ten test digits the model gets right with confidence, as PNG and JPEG photos."""
    _, run_dir = run
    probabilities = load_serving(run_dir / SAVED_MODEL)(
        images=tf.constant(mnist.test.images[:200])
    )["probabilities"].numpy()
    sure = [
        i
        for i in range(200)
        if probabilities[i].argmax() == mnist.test.labels[i] and probabilities[i].max() > 0.99
    ][:10]
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for n, i in enumerate(sure):
        rgb = tf.constant(as_photo(mnist.test.images[i]))
        encoded = tf.io.encode_png(rgb) if n % 2 else tf.io.encode_jpeg(rgb, quality=95)
        paths.append(folder / f"digit{i}.{'png' if n % 2 else 'jpg'}")
        paths[-1].write_bytes(encoded.numpy())
    return paths, [int(mnist.test.labels[i]) for i in sure]


def test_mnist_like_undoes_size_inversion_colour_and_position(photos, mnist):
    paths, _ = photos
    index = int(paths[0].stem.removeprefix("digit"))
    made = load_digit(paths[0]).astype(np.float32)
    original = mnist.test.images[index].astype(np.float32)
    assert made.shape == (28, 28)
    assert np.corrcoef(made.ravel(), original.ravel())[0, 1] > 0.9


def test_predict_script_reads_photos_and_names_their_digits(run, photos, tmp_path):
    _, run_dir = run
    paths, labels = photos
    shown = tmp_path / "seen.png"
    result = run_script(
        "predict.py",
        "--model",
        str(run_dir / SAVED_MODEL),
        "--json",
        "--show",
        str(shown),
        *map(str, paths),
    )
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert [p["digit"] for p in predictions] == labels
    assert all(p["top3"][0]["digit"] == p["digit"] and len(p["top3"]) == 3 for p in predictions)
    assert all(0.5 < p["probability"] <= 1.0 for p in predictions)
    height, width, _ = tf.io.decode_png(shown.read_bytes()).shape
    assert width == 5 * 130 and height == 2 * 155  # 5 columns of 1.3 in, 2 rows, at 100 dpi


def test_bad_images_are_reported_and_the_rest_still_predicted(run, photos, tmp_path):
    _, run_dir = run
    paths, labels = photos
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    blank = tmp_path / "blank.png"
    blank.write_bytes(tf.io.encode_png(np.full((40, 40, 1), 255, np.uint8)).numpy())
    result = run_script(
        "predict.py",
        "--model",
        str(run_dir / SAVED_MODEL),
        str(paths[0]),
        str(tmp_path / "notes.png"),
        str(tmp_path / "empty.png"),
        str(blank),
        str(tmp_path / "missing.png"),
    )
    assert_clean_error(
        result,
        "notes.png: not an image",
        "empty.png: not an image",
        "blank.png: no digit found",
        "missing.png: cannot read",
    )
    assert result.stdout.startswith(f"{paths[0]}: {labels[0]} (probability")


def test_missing_model_and_reexport_from_a_checkpoint(run, tmp_path):
    _, run_dir = run
    missing = run_here("predict.py", "--model", str(tmp_path / "nowhere"), "x.png")
    assert_clean_error(missing, "nowhere: not a SavedModel directory")
    out = tmp_path / "again"
    exported = run_script("export.py", "--run", str(run_dir), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    images = tf.constant(np.zeros((3, 28, 28), np.uint8))
    np.testing.assert_array_equal(
        load_serving(out)(images=images)["probabilities"].numpy(),
        load_serving(run_dir / SAVED_MODEL)(images=images)["probabilities"].numpy(),
    )
    assert_clean_error(run_here("export.py", "--run", str(tmp_path / "no-run")), "does not exist")


def huge_png(path: Path, side: int) -> Path:
    """A real side x side grayscale PNG, all white but for a dot: tiny on disk, huge decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    packer, row = zlib.compressobj(1), b"\x00" + b"\xff" * side
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )
    return path


def test_images_over_the_pixel_limit_are_refused_from_their_header(tmp_path):
    from PIL import Image

    from mlp_core.serving.digits import MAX_PIXELS, header_size
    from mlp_core.serving.predict import predict_files

    for fmt in ("PNG", "GIF", "BMP", "JPEG"):
        Image.new("L", (53, 37), 255).save(tmp_path / f"small.{fmt}", fmt)
        assert header_size((tmp_path / f"small.{fmt}").read_bytes()) == (53, 37), fmt
    huge = huge_png(tmp_path / "huge.png", 20000)  # 400 million pixels in a few hundred KB
    assert huge.stat().st_size < 2_000_000 and 20000 * 20000 > MAX_PIXELS
    (tmp_path / "huge.gif").write_bytes(b"GIF89a" + (60000).to_bytes(2, "little") * 2 + b"\0" * 8)
    (tmp_path / "huge.bmp").write_bytes(
        b"BM"
        + b"\0" * 12
        + (40).to_bytes(4, "little")
        + (9000).to_bytes(4, "little")
        + (-9000).to_bytes(4, "little", signed=True)
    )
    (tmp_path / "huge.jpg").write_bytes(
        b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x11\x08"
        + (30000).to_bytes(2, "big") * 2
        + b"\0" * 16
    )
    seen = []
    serve = lambda images: seen.append(images.shape) or {"probabilities": tf.one_hot([7], 10)}  # noqa: E731
    names = [str(tmp_path / n) for n in ("huge.png", "huge.gif", "huge.bmp", "huge.jpg")]
    seven = str(ROOT / "docs" / "examples" / "seven.png")
    predictions, errors = predict_files(serve, [*names, seven])
    assert [p.path for p in predictions] == [seven] and seen == [(1, 28, 28)]
    assert len(errors) == 4
    for name, error, size in zip(
        names, errors, ("20000x20000", "60000x60000", "9000x9000", "30000x30000")
    ):
        assert (
            error.startswith(f"{name}: image is {size} = ")
            and f"over the limit of {MAX_PIXELS:,}" in error
        )
