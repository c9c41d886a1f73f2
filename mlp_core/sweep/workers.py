"""Workers: processes that resume their share of cut trials, then draw and train new ones until
the study holds the requested number (`--workers N` on one machine; one command per machine on a
shared `--storage`)."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from typing import Any

from mlp_core.core.errors import UserError
from mlp_core.sweep.report import progress_line
from mlp_core.sweep.study import GIVE_UP_AFTER, SweepSpec, claim, load_study, open_storage
from mlp_core.sweep.trial import run_trial


def run_worker(spec: SweepSpec, worker: int = 0, resume: Sequence[int] = ()) -> None:
    """Resume this worker's share of cut trials, then draw and train until the study is full."""
    study = load_study(spec, open_storage(spec.storage), worker)
    failures = 0
    for number in resume:
        trial = _reopen(study, number)
        run_trial(study, trial, spec, resume=True)
        print(progress_line(study, spec.trials), flush=True)
    while failures < GIVE_UP_AFTER:
        trial = claim(study, spec)
        if trial is None:
            return
        state = run_trial(study, trial, spec, resume=False)
        failures = failures + 1 if state == "failed" else 0
        print(progress_line(study, spec.trials), flush=True)
    raise UserError(f"{GIVE_UP_AFTER} trials in a row failed; stopping (see the lines above)")


def _reopen(study: Any, number: int) -> Any:
    """A live Trial object for a RUNNING trial of the study, to finish it in this process."""
    import optuna

    frozen = study.get_trials(deepcopy=False)[number]
    return optuna.trial.Trial(study, frozen._trial_id)


def run_workers(spec: SweepSpec, workers: int, resume: Sequence[int]) -> None:
    """`workers` processes on this machine (this one alone when 1), the cut trials shared out."""
    shares = [list(resume[i::workers]) for i in range(workers)]
    if workers == 1:
        run_worker(spec, 0, shares[0])
        return
    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive a fork
    processes = [
        context.Process(target=_worker_main, args=(spec, i, shares[i]), name=f"sweep-worker-{i}")
        for i in range(workers)
    ]
    for process in processes:
        process.start()  # the caller has created the study's tables: none of them races to
    try:
        for process in processes:
            process.join()
    finally:  # on Ctrl-C or SIGTERM: the workers checkpoint their trials and stop
        _stop(processes)
    if any(p.exitcode for p in processes):
        raise UserError(
            f"a worker stopped with exit code {max(p.exitcode or 0 for p in processes)}"
        )


def _stop(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=120)


def _worker_main(spec: SweepSpec, worker: int, resume: Sequence[int]) -> None:
    """A worker process: the same one-line errors and exit codes as a script."""
    from mlp_core.config.cli import run_main

    def main(_: list[str] | None) -> int:
        run_worker(spec, worker, resume)
        return 0

    sys.exit(run_main(main, []))
