"""One exception type for everything a user can cause, and the wrapper that turns it into one line.

Scripts never show a traceback for bad input: they print `error: <what is wrong>` and exit non-zero.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import NoReturn


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error format: a bad flag is one line, not the usage block first.

    The full usage is long (one flag per Config field) and would bury the line that says what is
    wrong, so the error names the problem and points to --help instead.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a script's main, mapping user errors, Ctrl-C and SIGTERM to one line and an exit code.

    Training installs its own handlers that checkpoint first; these cover the rest of the script.
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        signum = err.args[0] if err.args else signal.SIGINT
        print(f"error: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum


def _raise_interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signum)
