"""The exceptions a user can cause: each carries a one-line message and an exit code.

The scripts' wrapper (`mlp_core.config.cli.run_main`) prints them as `error: <what is wrong>`.
"""

from __future__ import annotations

import signal


class UserError(Exception):
    """A problem the user can fix (bad data, bad flags, bad paths). Its message is one line."""

    exit_code = 2


class DataError(UserError):
    """A data file is missing, corrupt or inconsistent."""


class Interrupted(UserError):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved; exits 128 + signal."""

    def __init__(self, signum: int, step: int, config) -> None:
        self.exit_code = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved. Resume with: "
            f"python scripts/train.py --logdir {config.logdir} --run-name {config.run_name} --resume"
        )


class DivergedError(UserError):
    """Training produced a non-finite loss or gradient."""

    exit_code = 3
