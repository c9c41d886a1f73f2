"""The mission notebook: the committed copy is a complete run, and it runs headless from scratch."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from conftest import ROOT

nbformat = pytest.importorskip("nbformat", reason="the [notebook] extra is not installed")

NOTEBOOK = ROOT / "notebooks" / "mnist_mlp.ipynb"
ACCURACY = re.compile(r"test accuracy (\d+\.\d+) %  \(loss")  # the summary of the full run
STEP = re.compile(r"traced (\d+) time\(s\); loss (\d+\.\d+) -> (\d+\.\d+)")
GRADIENT = re.compile(r"tape (-?\d+\.\d+), finite difference (-?\d+\.\d+)")


def text_of(nb) -> str:
    """Everything the code cells printed to stdout."""
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


def outputs_of(nb, kind: str) -> list:
    return [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})
    ]


def errors_of(nb) -> list[str]:
    return [
        f"{o.ename}: {o.evalue}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]


def test_the_committed_notebook_is_one_complete_run_in_order():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    assert not errors_of(nb)
    assert NOTEBOOK.stat().st_size < 2_000_000
    [accuracy] = [float(a) for a in ACCURACY.findall(text_of(nb))]
    assert accuracy > 98.0  # a full run, not the tests' one-epoch subset


def stop_tensorboards_under(logdir: Path) -> None:
    """End the TensorBoard servers the notebook's %tensorboard started on `logdir`, by their pid."""
    from tensorboard import manager

    for info in manager.get_all():
        if Path(info.logdir).resolve().is_relative_to(logdir.resolve()):
            try:
                os.kill(info.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_the_notebook_runs_headless_on_one_epoch_of_a_subset(tmp_path):
    nbclient = pytest.importorskip("nbclient", reason="the [notebook] extra is not installed")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MLP_NOTEBOOK_EPOCHS": "1",
        "MLP_NOTEBOOK_SUBSET": "30000",
        "MLP_NOTEBOOK_LOGDIR": str(tmp_path / "logs"),
    }
    client = nbclient.NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute(env=env)
    finally:
        stop_tensorboards_under(tmp_path)
    assert not errors_of(nb)
    assert len(outputs_of(nb, "image/png")) >= 4
    printed = text_of(nb)
    [accuracy] = [float(a) for a in ACCURACY.findall(printed)]
    assert accuracy > 95.0
    [(traces, first, last)] = STEP.findall(printed)
    assert int(traces) == 1 and float(last) < float(first) / 2
    [(tape, difference)] = GRADIENT.findall(printed)
    assert float(tape) == pytest.approx(float(difference), rel=1e-3, abs=1e-5)
    assert (tmp_path / "logs").is_dir() and not (ROOT / "notebooks" / "logs").exists()
