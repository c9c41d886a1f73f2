"""The search space: `--param NAME=DOMAIN` parsed into Optuna distributions and HParams domains.

Domains:
    lo:hi           uniform over [lo, hi]: a float for float fields, an integer for int fields
    log:lo:hi       the same on a log scale (lo > 0)
    int:lo:hi       integers in [lo, hi], also for a float field
    choice:a|b|c    one of the texts, each given to the field's flag as written (hidden=choice:256|512,256)

A value is never checked here against hand-copied limits: both ends of a range and every choice
go through the train flags' own parser (`parse_config`), so the sweep accepts exactly what
`scripts/train.py` accepts, whatever that parser becomes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlp_core.config.config import Config, parse_config
from mlp_core.core.errors import UserError

# Where a trial's run goes is the sweep's business, not a hyperparameter.
NOT_SWEPT = ("logdir", "run_name")


@dataclass(frozen=True)
class Domain:
    """One swept field: its kind ('float', 'int' or 'choice'), range or choices, and scale."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    def text(self, value: Any) -> str:
        """A sampled value as the text its train flag takes."""
        return repr(value) if isinstance(value, float) else str(value)


def parse_param(spec: str) -> Domain:
    """`NAME=DOMAIN` -> a validated Domain; anything wrong is a UserError naming the spec."""
    name, sep, domain = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not domain:
        raise UserError(f"--param {spec!r}: expected NAME=DOMAIN, e.g. lr=log:1e-4:1e-2")
    fields = {f.name for f in dataclasses.fields(Config)}
    if name not in fields or name in NOT_SWEPT:
        raise UserError(f"--param {spec!r}: {name!r} is not a Config field that can be swept")
    parsed = _parse_domain(name, domain, spec)
    _validate(parsed, spec)
    return parsed


def parse_space(specs: Sequence[str]) -> list[Domain]:
    """Every `--param`, each field once."""
    if not specs:
        raise UserError("give at least one --param NAME=DOMAIN to search over")
    domains = [parse_param(spec) for spec in specs]
    names = [d.name for d in domains]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--param given twice for: {', '.join(repeated)}")
    return domains


def _parse_domain(name: str, domain: str, spec: str) -> Domain:
    """The syntax only; the values' validity is `_validate`'s."""
    kind, _, rest = domain.partition(":")
    if kind == "choice":
        choices = tuple(c.strip() for c in rest.split("|"))
        if not rest or any(c == "" for c in choices) or len(set(choices)) != len(choices):
            raise UserError(f"--param {spec!r}: expected choice:A|B|... with distinct values")
        return Domain(name, "choice", choices=choices)
    scale = kind if kind in ("log", "int") else ""
    ends = (rest if scale else domain).split(":")
    try:
        low, high = (float(end) for end in ends) if len(ends) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or high is None or not low < high:
        raise UserError(
            f"--param {spec!r}: expected lo:hi, log:lo:hi, int:lo:hi or choice:A|B with lo < hi"
        )
    if scale == "log" and low <= 0:
        raise UserError(f"--param {spec!r}: a log range needs lo > 0")
    default = getattr(Config(), name)
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if not numeric:
        raise UserError(f"--param {spec!r}: {name} is not a number; use choice:A|B|...")
    is_int = scale == "int" or isinstance(default, int)
    if is_int and not (low.is_integer() and high.is_integer()):
        raise UserError(f"--param {spec!r}: {name} takes integers")
    return Domain(name, "int" if is_int else "float", low, high, scale == "log")


def _validate(domain: Domain, spec: str) -> None:
    """Both ends (or every choice) must be values the field's train flag accepts."""
    values = domain.choices or (_end(domain, domain.low), _end(domain, domain.high))
    for value in values:
        problem = flag_problem(domain.name, str(value))
        if problem:
            raise UserError(f"--param {spec!r}: {problem}")


def _end(domain: Domain, value: float) -> int | float:
    return int(value) if domain.kind == "int" else value


def flag_problem(name: str, text: str) -> str | None:
    """Why `--NAME TEXT` is not a valid train flag (None if it is), from the train flags' parser.

    The parser reports a bad value by printing `error: ...` and exiting 2; the message is caught
    here so the sweep can report it as its own one line, before any trial runs.
    """
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parse_config([f"--{name.replace('_', '-')}", text])
    except SystemExit:
        message = stderr.getvalue().strip().splitlines()[-1:] or ["invalid value"]
        return message[0].removeprefix("error: ").split(" (see ")[0]
    return None


def field_value(name: str, text: str) -> Any:
    """The Config value the train flag makes of `text` (e.g. '512,256' -> (512, 256))."""
    return getattr(parse_config([f"--{name.replace('_', '-')}", text]), name)


def distributions(space: Sequence[Domain]) -> dict[str, Any]:
    """The Optuna distribution of every domain (Optuna imported only when a sweep runs)."""
    import optuna.distributions as od

    made: dict[str, Any] = {}
    for d in space:
        if d.kind == "choice":
            made[d.name] = od.CategoricalDistribution(d.choices)
        elif d.kind == "int":
            made[d.name] = od.IntDistribution(int(d.low), int(d.high), log=d.log)
        else:
            made[d.name] = od.FloatDistribution(d.low, d.high, log=d.log)
    return made


def describe(space: Sequence[Domain]) -> str:
    """The space as one canonical line: a study keeps it, and a rerun must give the same one."""
    parts = []
    for d in sorted(space, key=lambda d: d.name):
        if d.kind == "choice":
            parts.append(f"{d.name}=choice:{'|'.join(d.choices)}")
        else:
            scale = "log:" if d.log else ("int:" if d.kind == "int" else "")
            parts.append(f"{d.name}={scale}{d.text(_end(d, d.low))}:{d.text(_end(d, d.high))}")
    return " ".join(parts)
