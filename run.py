"""One entry point for a fresh machine: set up a virtual environment, then run the mission or test.

    python3 run.py mission [train.py flags...] # set up, explore, train the default MLP, analyze it
    python3 run.py train   [train.py flags...] # set up, then only train
    python3 run.py test    [pytest flags...]   # set up, then run the test suite
    python3 run.py check                       # set up, then lint, format- and type-check, layers
    python3 run.py notebook [jupyter flags...] # set up, then open the mission notebook in JupyterLab

Set-up (a `.venv/` beside this file with the package and its dev and notebook extras installed in
editable mode) happens once and is repeated only when pyproject.toml changes.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".mlp_core-installed"
COMMANDS = {
    "mission": ["scripts/mission.py"],
    "train": ["scripts/train.py"],
    "test": ["-m", "pytest"],
    "check": [],
    # No browser: it prints the URL (with its token) to open, which also works on a remote machine.
    "notebook": ["-m", "jupyterlab", "notebooks/mnist_mlp.ipynb", "--no-browser"],
}
CHECKS = (
    ["-m", "ruff", "check", "."],
    ["-m", "ruff", "format", "--check", "."],
    ["-m", "mypy"],
    # import-linter's contracts in pyproject.toml: the layers import downwards, without cycles.
    ["-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"],
)


def set_up() -> None:
    """Create .venv and install the package with its dev and notebook extras, unless up to date."""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == want and PYTHON.is_file():
        return
    if not PYTHON.is_file():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing mlp_core and its dependencies (first time only)", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev,notebook]"], check=True
    )
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python3 run.py {{{','.join(COMMANDS)}}} [args...]", file=sys.stderr)
        return 2
    if sys.version_info < (3, 10):  # noqa: UP036 (run.py may be started by an older python3)
        print("error: Python >= 3.10 is needed", file=sys.stderr)
        return 2
    try:
        set_up()
    except subprocess.CalledProcessError as err:
        print(
            f"error: set-up failed ({' '.join(err.cmd[2:4])} exited {err.returncode})",
            file=sys.stderr,
        )
        return 1
    if argv[0] == "check":
        return max(subprocess.call([str(PYTHON), *check], cwd=ROOT) for check in CHECKS)
    extra = ["--allow-root"] if argv[0] == "notebook" and running_as_root() else []
    return subprocess.call([str(PYTHON), *COMMANDS[argv[0]], *extra, *argv[1:]], cwd=ROOT)


def running_as_root() -> bool:
    """Jupyter refuses to start as root without --allow-root; containers and CI often are root."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
