"""Running a sweep: an Optuna study in a database, trials drawn from it and trained as normal runs.

The study lives in `<sweep>/study.db` (SQLite) unless `--storage` names another database, so a
sweep survives being killed: a rerun of the same command loads the study, resumes the trials that
were cut mid-way from their checkpoints, and draws only as many new ones as are still missing.
Each worker (`--workers N`, or one per machine on a shared `--storage`; see workers.py) draws
from the same study; Optuna's storage is what they share.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlp_core.config.config import Config, parse_config
from mlp_core.core.errors import UserError
from mlp_core.sweep.space import Domain, describe, distributions

DEFAULT_NAME = "sweep"
CLAIM_LOCK = ".claim.lock"
GIVE_UP_AFTER = 3  # failures in a row: something is wrong with every trial, not with one


@dataclass(frozen=True)
class SweepSpec:
    """Everything a worker needs; picklable, so `--workers` can hand it to new processes."""

    space: tuple[Domain, ...]
    fixed: tuple[str, ...]  # the train flags given, the part every trial shares
    trials: int
    sampler: str
    prune: bool
    storage: str
    name: str
    sweep_dir: str
    seed: int


def make_spec(
    space: Sequence[Domain],
    fixed: Sequence[str],
    trials: int,
    sampler: str = "tpe",
    prune: bool = True,
    storage: str | None = None,
) -> SweepSpec:
    """The sweep's settings from its domains and fixed train flags (which exit on a bad value),
    its directory made; the storage defaults to SQLite in that directory."""
    base = parse_config(list(fixed))
    if not base.val_size:
        raise UserError("a sweep ranks trials on validation images: --val-size must be > 0")
    sweep_dir, name = sweep_location(fixed)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{sweep_dir}: cannot create the sweep directory: {err.strerror}") from None
    url = storage or f"sqlite:///{sweep_dir.resolve() / 'study.db'}"
    return SweepSpec(
        tuple(space), tuple(fixed), trials, sampler, prune, url, name, str(sweep_dir), base.seed
    )


def sweep_location(fixed: Sequence[str]) -> tuple[Path, str]:
    """The sweep's directory, `--logdir/--run-name` (default `logs/sweep`), and its study name."""
    base = parse_config(list(fixed))
    name = base.run_name or DEFAULT_NAME
    return Path(base.logdir) / name, name


def open_storage(url: str) -> Any:
    """Optuna's RDB storage at `url`; one that cannot be opened is a UserError."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as err:  # sqlalchemy, a missing driver, a bad URL: all mean the same here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--storage {url}: cannot open it: {reason}") from None


def load_study(spec: SweepSpec, storage: Any, worker: int = 0) -> Any:
    """The sweep's study, created on first use; a study over another space is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        study_name=spec.name,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner() if spec.prune else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    study.sampler = make_sampler(spec, worker, len(study.get_trials(deepcopy=False)))
    space = describe(spec.space)
    saved = study.user_attrs.get("space")
    if saved is None:
        study.set_user_attr("space", space)
    elif saved != space:
        raise UserError(
            f"study {spec.name!r} searches {saved}, not {space}; "
            "give another --run-name for a new sweep"
        )
    return study


def make_sampler(spec: SweepSpec, worker: int, drawn: int) -> Any:
    """TPE or random, seeded by --seed, the worker and how many trials the study already holds.

    A sampler restarted with the same seed would draw the same values again (TPE's first trials
    are random draws), so a continued sweep seeds from where the study stands; a fresh sweep is
    still reproducible from --seed, and each worker draws differently.
    """
    import numpy as np
    import optuna

    seed = int(np.random.SeedSequence([spec.seed, worker, drawn]).generate_state(1)[0])
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def trial_config(spec: SweepSpec, values: dict[str, Any], run_name: str) -> Config:
    """The trial's Config: the fixed train flags, then the drawn values, parsed like train.py's."""
    drawn = [part for d in spec.space for part in (d.flag, d.text(values[d.name]))]
    argv = [*spec.fixed, *drawn, "--logdir", spec.sweep_dir, "--run-name", run_name]
    return parse_config(argv)  # the preset too, as scripts/train.py applies it


def suggest(trial: Any, space: Sequence[Domain]) -> dict[str, Any]:
    """Draw every domain (a resumed trial gets back the values it drew before)."""
    import optuna.distributions as od

    values: dict[str, Any] = {}
    for name, dist in distributions(space).items():
        if isinstance(dist, od.CategoricalDistribution):
            values[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, od.IntDistribution):
            values[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            values[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return values


def counts(study: Any) -> dict[str, int]:
    """Trials by state: complete, pruned, running and failed."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
    states |= {"running": TrialState.RUNNING, "failed": TrialState.FAIL}
    return {name: sum(t.state == state for t in trials) for name, state in states.items()}


@contextlib.contextmanager
def claim_lock(sweep_dir: Path) -> Iterator[None]:
    """One local worker at a time counts the trials and draws the next, so N workers on this
    machine stop at exactly the requested number."""
    with open(sweep_dir / CLAIM_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def claim(study: Any, spec: SweepSpec) -> Any | None:
    """A new trial, or None once finished and running trials make up the requested number."""
    with claim_lock(Path(spec.sweep_dir)):
        n = counts(study)
        if n["complete"] + n["pruned"] + n["running"] >= spec.trials:
            return None
        trial = study.ask()
        mark(trial, spec)
        return trial


def mark(trial: Any, spec: SweepSpec) -> None:
    """Where the trial runs, so a rerun on this machine can tell a cut trial from a running one."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("run_dir", str(Path(spec.sweep_dir) / run_name(trial.number)))


def run_name(number: int) -> str:
    return f"trial-{number:03d}"


def cut_trials(study: Any, spec: SweepSpec) -> list[int]:
    """Trials left RUNNING by a process on this machine that no longer holds their run."""
    from optuna.trial import TrialState

    host, cut = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host", host) != host:
            continue  # another machine's: it resumes its own
        run_dir = Path(t.user_attrs.get("run_dir", Path(spec.sweep_dir) / run_name(t.number)))
        if run_dir.parent == Path(spec.sweep_dir) and not _held(run_dir):
            cut.append(t.number)
    return cut


def _held(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (the trainer's flock; gone when it dies)."""
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
