"""Installing the package as a new user does: quiet, and the MNIST copy goes into the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

from mlp_core.core.data import FILES

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out


def test_building_the_package_is_quiet_and_ships_the_data(tmp_path):
    """The same build `pip install -e .` runs (isolated, the newest setuptools the index has)."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "mlp_core", source / "mlp_core", ignore=shutil.ignore_patterns("__pycache__", "*.gz")
    )
    for name in FILES.values():  # stand-ins: the build only needs the files to exist
        (source / "mlp_core" / "_mnist" / f"{name}.gz").write_bytes(b"\x1f\x8b")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode and "No matching distribution found for setuptools" in result.stderr:
        pytest.skip("no setuptools to build with (offline, no local index)")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Warning" not in output and "absent from the `packages`" not in output, output
    [wheel] = (tmp_path / "dist").glob("mlp_core-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mlp_core/_mnist/{name}.gz" for name in FILES.values()} <= shipped
    assert "mlp_core/_mnist/SHA256SUMS" in shipped and "mlp_core/training/loop.py" in shipped
