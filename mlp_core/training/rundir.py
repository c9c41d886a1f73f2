"""A run's directory: `logs/<run-name>/` with config.json, metrics.json and checkpoints/.

JSON files are written atomically (temporary file, then rename), so a crash never leaves half a
file where a finished one was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlp_core.config.config import Config, run_name_problem
from mlp_core.core.errors import UserError

CONFIG = "config.json"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def run_path(logdir: str | Path, run_name: str) -> Path:
    """`<logdir>/<run_name>`, refusing a name that would put the run anywhere else."""
    problem = run_name_problem(run_name)
    if problem:
        raise UserError(f"--run-name {problem}")
    return Path(logdir) / run_name


def create_run_dir(config: Config) -> Path:
    """Make a new, empty run directory; refuse to reuse one (no silent overwrite)."""
    run_dir = run_path(config.logdir, config.run_name or default_run_name())
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(
            f"{run_dir}: run directory already exists; choose another --run-name "
            "(or add --resume to continue it)"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, config.to_dict())
    except OSError as err:
        raise UserError(f"{run_dir}: cannot write the run directory: {err.strerror}") from None
    return run_dir


def open_run_dir(config: Config) -> Path:
    """The existing, unfinished run directory that `--resume` continues."""
    if not config.run_name:
        raise UserError("--resume needs the --run-name of the run to continue")
    run_dir = run_path(config.logdir, config.run_name)
    if not (run_dir / CONFIG).is_file():
        raise UserError(f"{run_dir}: no run to resume (give the --run-name of an existing run)")
    if (run_dir / METRICS).is_file():
        status = read_json(run_dir / METRICS).get("status")
        raise UserError(f"{run_dir}: run already finished (status: {status}); nothing to resume")
    return run_dir


@contextlib.contextmanager
def run_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold the run directory for this process: a second trainer or exporter is refused.

    An flock on `<run>/.lock`, which holds the PID for the message; the operating system drops the
    lock when the process dies in any way (kill -9 included), so a lock is never left stale.
    """
    if not enabled:
        yield
        return
    try:
        handle = open(run_dir / LOCK, "a+")
    except OSError as err:
        raise UserError(f"{run_dir}: cannot open the run lock: {err.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(
                f"{run_dir}: in use by process {holder} (a trainer or exporter); "
                "wait for it to end or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


RESUMABLE_CHANGES = {"logdir", "run_name", "data_dir"}


def config_for_resume(given: Config, explicit: set[str]) -> Config:
    """The saved config of the run to resume; flags given explicitly must agree with it."""
    if not given.run_name:
        raise UserError("--resume needs the --run-name of the run to continue")
    saved = load_config(run_path(given.logdir, given.run_name))
    for name in sorted(explicit - RESUMABLE_CHANGES):
        if getattr(given, name) != getattr(saved, name):
            raise UserError(
                f"--resume: --{name.replace('_', '-')} {getattr(given, name)} differs from "
                f"the run's {getattr(saved, name)} (a resumed run keeps its config)"
            )
    return replace(
        saved,
        logdir=given.logdir,
        run_name=given.run_name,
        data_dir=given.data_dir if "data_dir" in explicit else saved.data_dir,
    )


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never a partial one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read: {err}") from None


def load_config(run_dir: Path) -> Config:
    """The Config a run was trained with."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory does not exist")
    if not (run_dir / CONFIG).is_file():
        raise UserError(f"{run_dir}: not a run directory (no {CONFIG})")
    return Config.from_dict(read_json(run_dir / CONFIG))
