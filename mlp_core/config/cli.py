"""The command line's error format: a bad flag or bad input is one `error:` line and an exit code.

Scripts never show a traceback for bad input: they print `error: <what is wrong>` and exit non-zero.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from mlp_core.core.errors import UserError


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
