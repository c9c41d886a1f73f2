"""What a sweep prints and saves: the progress line, the table of trials best first, the best
trial's config with the command that retrains it on all 60,000 images, and one figure of each
hyperparameter against validation accuracy."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlp_core.sweep.space import Domain

# Flags the retraining command drops: it trains on every training image, in its own directory.
RETRAIN_DROPS = ("--logdir", "--run-name", "--train-subset", "--val-size")
STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 2, "FAIL": 3}


def progress_line(study: Any, target: int) -> str:
    """`trials: 5/20 done (2 pruned), 2 running, 15 left; best validation accuracy 97.81 % (trial 3)`."""
    from mlp_core.sweep.study import counts

    n = counts(study)
    done = n["complete"] + n["pruned"]
    best = _best(study)
    best_text = (
        f"best validation accuracy {100 * best.value:.2f} % (trial {best.number})"
        if best
        else "no trial completed yet"
    )
    failed = f", {n['failed']} failed" if n["failed"] else ""
    return (
        f"trials: {done}/{target} done ({n['pruned']} pruned{failed}), {n['running']} running, "
        f"{max(target - done, 0)} left; {best_text}"
    )


def _best(study: Any) -> Any | None:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def ranked(study: Any) -> list[Any]:
    """Completed trials by validation accuracy, then pruned ones by their last, then the rest."""
    trials = study.get_trials(deepcopy=False)
    return sorted(
        trials,
        key=lambda t: (STATE_ORDER.get(t.state.name, 4), -_value(t), t.number),
    )


def _value(trial: Any) -> float:
    """Validation accuracy: the final one, or a pruned trial's last epoch's."""
    if trial.value is not None:
        return float(trial.value)
    values = trial.intermediate_values
    return float(values[max(values)]) if values else float("nan")


def table(study: Any, space: Sequence[Domain]) -> str:
    """The trials, best first: state, epochs trained, accuracies, time and the drawn values."""
    names = [d.name for d in space]
    head = ["trial", "state", "epochs", "val acc %", "test acc %", "wall s", *names]
    rows = [head]
    for t in ranked(study):
        test = t.user_attrs.get("test_accuracy")
        wall = t.user_attrs.get("wall_seconds")
        rows.append(
            [
                str(t.number),
                t.state.name.lower() + (" (diverged)" if "diverged" in t.user_attrs else ""),
                str(len(t.intermediate_values)),
                _percent(_value(t)),
                _percent(test) if test is not None else "-",
                f"{wall:.0f}" if wall is not None else "-",
                *(_text(t.params.get(n)) for n in names),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _percent(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def retrain_command(fixed: Sequence[str], space: Sequence[Domain], params: dict) -> str:
    """scripts/train.py with the sweep's fixed flags and the best values, on all training images
    (`--val-size 0`, no `--train-subset`), in a run directory of its own."""
    kept = _drop_flags(fixed, RETRAIN_DROPS)
    drawn = [part for d in space for part in (d.flag, d.text(params[d.name]))]
    return "python scripts/train.py " + shlex.join([*kept, *drawn, "--val-size", "0"])


def _drop_flags(argv: Sequence[str], drops: Sequence[str]) -> list[str]:
    """`argv` without the given flags and their values (`--flag value` or `--flag=value`)."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        flag, eq, _ = token.partition("=")
        if flag in drops:
            skip = not eq
            continue
        kept.append(token)
    return kept


def best_summary(study: Any, fixed: Sequence[str], space: Sequence[Domain]) -> str:
    """The best trial's values, run directory and retraining command (or why there is none)."""
    best = _best(study)
    if best is None:
        return "no trial completed: no best configuration"
    values = " ".join(f"{d.flag} {d.text(best.params[d.name])}" for d in space)
    return (
        f"best: trial {best.number}, validation accuracy {100 * best.value:.2f} %: {values}\n"
        f"run directory: {best.user_attrs.get('run_dir', '-')}\n"
        f"retrain on all 60,000 training images:\n  {retrain_command(fixed, space, best.params)}"
    )


def final_report(study: Any, spec: Any) -> str:
    """The end of a sweep: the table (also saved as trials.txt), the progress line, the best
    trial with its retraining command, and the figure's path."""
    sweep_dir = Path(spec.sweep_dir)
    trials = table(study, spec.space)
    (sweep_dir / "trials.txt").write_text(trials + "\n")
    png = figure(study, spec.space, sweep_dir / "hparams_vs_val_accuracy.png")
    return "\n".join(
        [
            trials,
            progress_line(study, spec.trials),
            best_summary(study, spec.fixed, spec.space),
            f"figure: {png or 'none (no trial finished)'}",
            f"TensorBoard: tensorboard --logdir {sweep_dir}  (HParams tab)",
        ]
    )


def figure(study: Any, space: Sequence[Domain], path: Path) -> Path | None:
    """One panel per hyperparameter: its value against validation accuracy, pruned trials hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in study.get_trials(deepcopy=False) if _value(t) == _value(t) and t.params]
    if not trials:
        return None
    fig, axes = plt.subplots(1, len(space), figsize=(3.2 * len(space), 3.0), squeeze=False)
    for ax, domain in zip(axes[0], space):
        _panel(ax, domain, trials)
    axes[0][0].set_ylabel("validation accuracy (last epoch)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _panel(ax: Any, domain: Domain, trials: Sequence[Any]) -> None:
    import matplotlib.ticker

    choices = list(domain.choices)
    for state, style in (
        ("COMPLETE", {"color": "C0"}),
        ("PRUNED", {"facecolors": "none", "edgecolors": "C3"}),
    ):
        chosen = [t for t in trials if t.state.name == state and domain.name in t.params]
        xs = [
            choices.index(t.params[domain.name]) if choices else t.params[domain.name]
            for t in chosen
        ]
        ax.scatter(xs, [_value(t) for t in chosen], label=state.lower(), s=24, **style)
    if choices:
        ax.set_xticks(range(len(choices)), choices, rotation=30)
        ax.set_xlim(-0.5, len(choices) - 0.5)
    elif domain.log:  # the axis spans the searched range, so where nothing was drawn shows too
        ax.set_xscale("log")
        ax.set_xlim(domain.low / 1.2, domain.high * 1.2)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only
    else:
        pad = 0.03 * (domain.high - domain.low)
        ax.set_xlim(domain.low - pad, domain.high + pad)
    ax.set_xlabel(domain.name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
