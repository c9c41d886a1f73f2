"""One trial: draw its values, train it as a normal run, report each epoch to the pruner, record
the outcome in the study and on the dashboard."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from mlp_core.config.config import Config
from mlp_core.core.errors import DivergedError, Interrupted, UserError
from mlp_core.observers.base import Observer, RunContext
from mlp_core.sweep.dashboard import write_outcome
from mlp_core.sweep.study import SweepSpec, run_name, suggest, trial_config
from mlp_core.training.rundir import METRICS, read_json


class PruningObserver(Observer):
    """Reports each epoch's validation accuracy to the trial and stops it when the pruner says so.

    The stop is an exception from `on_epoch_end`, after the epoch's checkpoint and summaries are
    written, so a pruned trial's run directory holds every epoch it trained.
    """

    def __init__(self, trial: Any, prune: bool):
        self.trial, self.prune = trial, prune
        self.started = time.perf_counter()
        self.records: list[dict] = []

    def on_epoch_end(self, ctx: RunContext, epoch: int, record: dict) -> None:
        import optuna

        self.records.append(record)
        self.trial.report(record["val_accuracy"], epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: below the median of earlier trials")

    def measured(self) -> dict[str, float]:
        """Wall time and training examples/s of the epochs this process trained."""
        seconds = sum(r["train_seconds"] for r in self.records)
        examples = sum(r["train_seconds"] * r["train_examples_per_sec"] for r in self.records)
        return {
            "wall_seconds": time.perf_counter() - self.started,
            "train_examples_per_sec": examples / seconds if seconds else 0.0,
        }


def sweep_observers(config: Config) -> list[Observer]:
    """A normal run's observers, its HParams config left to the sweep's root (see dashboard.py)."""
    from mlp_core.observers.summaries import TensorBoardObserver
    from mlp_core.training.loop import default_observers

    observers = default_observers(config)
    for observer in observers:
        if isinstance(observer, TensorBoardObserver):
            observer.experiment = False
    return observers


def run_trial(study: Any, trial: Any, spec: SweepSpec, resume: bool) -> str:
    """Train the trial (or finish a cut one) and tell the study; returns its final state.

    A diverged trial counts as pruned (its values are a result: they diverge); any other error
    fails the trial, which does not count towards --trials, so another is drawn. A signal leaves
    the trial running in the study: the rerun resumes it from its checkpoint.
    """
    import optuna

    from mlp_core.training.loop import train_and_evaluate

    values = suggest(trial, spec.space)
    config = trial_config(spec, values, run_name(trial.number))
    run_dir = Path(spec.sweep_dir) / run_name(trial.number)
    resume = resume and (run_dir / "config.json").is_file()
    if resume and (run_dir / METRICS).is_file():  # trained to the end, cut before the tell
        return _finish_saved(study, trial, run_dir)
    pruning = PruningObserver(trial, spec.prune)
    try:
        metrics = train_and_evaluate(
            config, observers=[*sweep_observers(config), pruning], resume=resume
        )
    except optuna.TrialPruned:
        return _finish(study, trial, "pruned", run_dir, pruning.measured())
    except DivergedError as err:
        trial.set_user_attr("diverged", str(err).split(";")[0])
        return _finish(study, trial, "pruned", run_dir, pruning.measured())
    except Interrupted as err:  # the message names this sweep's way to continue, not train.py's
        stop = UserError(
            f"trial {trial.number} {str(err).split(';')[0]}; its checkpoint is saved: "
            "the same sweep command continues it"
        )
        stop.exit_code = err.exit_code
        raise stop from None
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 (one bad trial must not end the sweep)
        print(f"trial {trial.number} failed: {type(err).__name__}: {err}", file=sys.stderr)
        trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
        return _finish(study, trial, "failed", run_dir, pruning.measured())
    _report_missing(study, trial, metrics["history"])
    return _finish(study, trial, "complete", run_dir, _final(metrics))


def _report_missing(study: Any, trial: Any, history: list[dict]) -> None:
    """Epochs a cut trial trained before it was killed but had not reported yet (the kill came
    between the epoch's checkpoint and its report): the pruner compares every epoch."""
    reported = study.get_trials(deepcopy=False)[trial.number].intermediate_values
    for record in history:
        if record["epoch"] not in reported and record.get("val_accuracy") is not None:
            trial.report(record["val_accuracy"], record["epoch"])


def _final(metrics: dict) -> dict[str, float]:
    keys = ("test_accuracy", "test_loss", "val_accuracy", "wall_seconds", "train_examples_per_sec")
    return {key: float(metrics[key]) for key in keys if metrics.get(key) is not None}


def _finish_saved(study: Any, trial: Any, run_dir: Path) -> str:
    """A trial whose run wrote metrics.json before the sweep was cut: record it as it ended."""
    metrics = read_json(run_dir / METRICS)
    if metrics.get("status") == "completed":
        _report_missing(study, trial, metrics["history"])
        return _finish(study, trial, "complete", run_dir, _final(metrics))
    return _finish(study, trial, "pruned", run_dir, {})


def _finish(study: Any, trial: Any, state: str, run_dir: Path, values: dict[str, float]) -> str:
    """Tell the study, keep the trial's numbers with it, and write its dashboard outcome."""
    from optuna.trial import TrialState

    for key, value in values.items():
        trial.set_user_attr(key, value)
    if state == "complete":
        study.tell(trial, values["val_accuracy"])
    else:
        study.tell(trial, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)
    if run_dir.is_dir():
        epochs = len(study.get_trials(deepcopy=False)[trial.number].intermediate_values)
        outcome: dict[str, float] = {
            k: values[k] for k in ("wall_seconds", "train_examples_per_sec") if k in values
        }
        write_outcome(run_dir, state, epochs, outcome)
    return state
