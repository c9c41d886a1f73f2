"""The one frozen dataclass of hyperparameters; its fields also define the command-line flags.

Each field carries its flag in `metadata["flag"]` (help, parser, choices, spelling), and
`add_config_flags` generates the argparse flags from `dataclasses.fields(Config)`, so a setting is
written once. Every run saves its Config as `config.json` and to TensorBoard, so a number can
always be traced back to the settings that produced it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mlp_core.config import presets
from mlp_core.config.cli import ArgumentParser
from mlp_core.core.errors import UserError

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "elu", "swish")
INITIALIZERS = ("he_uniform", "glorot_uniform", "he_normal", "glorot_normal")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("cosine", "constant")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
AUGMENTS = ("none", "affine", "elastic", "affine+elastic")  # see augment.py and docs/best.md
PRESETS = tuple(presets.PRESETS)  # named flag sets, see presets.py


def _parse(kind: type, text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _parse(int, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    value = _parse(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _parse(float, text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    value = _parse(float, text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = _parse(float, text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def layer_sizes(text: str) -> tuple[int, ...]:
    """Parse '512,256' into (512, 256); '' or 'none' means no hidden layer (softmax regression)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated layer sizes like 512,256, got {text!r}"
        ) from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


def parse_step_range(text: str) -> tuple[int, int]:
    """'A:B' -> (A, B) with 1 <= A <= B: the steps of a run to profile."""
    first, sep, last = text.partition(":")
    try:
        span = (int(first), int(last)) if sep else ()
    except ValueError:
        span = ()
    if len(span) != 2 or not 1 <= span[0] <= span[1]:
        raise ValueError(f"expected A:B with 1 <= A <= B, got {text!r}")
    return span


def step_range(text: str) -> str:
    if not text:  # the default (argparse passes string defaults through `type` too)
        return ""
    try:
        first, last = parse_step_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return f"{first}:{last}"


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a run directory (None if it can): it must be one plain component
    inside --logdir, so a name can neither climb out of it ('..', '/x') nor nest ('a/b')."""
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not name or any(sep in name for sep in separators) or "\0" in name:
        return f"must be one plain directory name (no path separators), got {name!r}"
    if name.startswith((".", "-")):
        return f"must not start with '.' or '-', got {name!r}"
    return None


def checked_run_name(text: str) -> str:
    problem = run_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def digits(text: str) -> str:
    """'9' or '3,5' (classes 0..9, kept as text in the Config); '' = every class."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() and len(p) == 1 for p in parts):
        raise argparse.ArgumentTypeError(f"must be digits like 9 or 3,5, got {text!r}")
    return ",".join(sorted(set(parts)))


@dataclass(frozen=True)
class Flag:
    """How one Config field appears on the command line.

    kind "value" takes an argument (checked by `parse`, or one of `choices`); "off" is a lone
    `--no-<field>` that stores False; "toggle" is a `--x/--no-x` pair whose default None means
    "let the library choose". `spelling` replaces the `--field-name` derived from the field.
    """

    help: str
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    kind: Literal["value", "off", "toggle"] = "value"
    spelling: str | None = None
    metavar: str | None = None

    def option(self, name: str) -> str:
        """The flag as typed: `--batch-size` for `batch_size`, `--no-normalize` for an "off"."""
        derived = ("--no-" if self.kind == "off" else "--") + name.replace("_", "-")
        return self.spelling or derived


T = TypeVar("T")


def option(default: T, help: str, **flag: Any) -> T:
    """A Config field with its default and its flag (the keywords of `Flag`)."""
    return dataclasses.field(default=default, metadata={"flag": Flag(help, **flag)})


@dataclass(frozen=True)
class Config:
    """Hyperparameters and run settings; the defaults are the recipe docs/training.md reports.

    One field, one flag: the `option(...)` beside each default is the flag's help and parser.
    """

    epochs: int = option(20, "training epochs", parse=positive_int)
    batch_size: int = option(128, "examples per step", parse=positive_int)
    hidden: tuple[int, ...] = option(
        (512, 256), "hidden sizes, e.g. 512,256; none = no hidden layer", parse=layer_sizes
    )
    activation: str = option("relu", "hidden-layer activation", choices=ACTIVATIONS)
    dropout: float = option(0.1, "dropout rate on hidden layers", parse=fraction)
    initializer: str = option("he_uniform", "weight initializer", choices=INITIALIZERS)
    optimizer: str = option("adamw", "update rule", choices=OPTIMIZERS)
    lr: float = option(5e-3, "peak learning rate", parse=positive_float)
    momentum: float = option(0.9, "for momentum/nesterov SGD", parse=fraction)
    # Decay per step is lr * wd: it matters in long runs.
    weight_decay: float = option(0.05, "AdamW decoupled decay", parse=nonneg_float)
    schedule: str = option("cosine", "cosine = warm-up then cosine", choices=SCHEDULES)
    warmup_epochs: float = option(1.0, "epochs of linear warm-up", parse=nonneg_float)
    label_smoothing: float = option(0.0, "label smoothing of the targets", parse=fraction)
    l2: float = option(0.0, "L2 penalty on the weight matrices", parse=nonneg_float)
    clip_norm: float = option(0.0, "global-norm clip; 0 = off", parse=nonneg_float)
    seed: int = option(
        0, "random seed: initialization, shuffling, dropout, augmentation", parse=nonneg_int
    )
    val_size: int = option(10_000, "last N training images", parse=nonneg_int)
    normalize: bool = option(
        True, "feed raw 0..255 pixels (for the normalization experiment)", kind="off"
    )
    train_subset: int = option(
        0, "train on the first N training images only; 0 = all", parse=nonneg_int
    )
    checkpoint_every: int = option(
        1000, "also checkpoint every N steps mid-epoch; 0 = at epoch ends only", parse=nonneg_int
    )
    summaries: bool = option(
        True, "write no TensorBoard summaries (for throughput comparisons)", kind="off"
    )
    log_every: int = option(
        100, "TensorBoard training scalars every N steps; 0 = off", parse=nonneg_int
    )
    histogram_every: int = option(
        1, "weight, gradient and activation histograms every N epochs; 0 = off", parse=nonneg_int
    )
    # "A:B": capture a tf.profiler trace of steps A..B; "" = off.
    profile_steps: str = option(
        "",
        "capture a TensorBoard profile of training steps A..B (from 1) into the run directory",
        parse=step_range,
        metavar="A:B",
    )
    data_dir: str | None = option(None, "IDX files or mnist.npz; default: packaged copy")
    logdir: str = option("logs", "parent directory of run directories")
    run_name: str | None = option(
        None, "run directory name; default: timestamp", parse=checked_run_name
    )
    strategy: str = option(
        "default",
        "tf.distribute: one device, all local GPUs (mirrored) or the TF_CONFIG cluster",
        choices=STRATEGIES,
    )
    logical_cpus: int = option(
        0,
        "split the CPU into N logical devices (for mirrored without GPUs); 0 = no split",
        parse=nonneg_int,
    )
    # Fast paths; None / 0 / "auto" = the fastest correct choice for the device (fastpaths/choose.py).
    jit_compile: bool | None = option(
        None,
        "compile the step with XLA (default: the device's fastest)",
        kind="toggle",
        spelling="--jit",
    )
    steps_per_call: int = option(
        0, "training steps per compiled call; 0 = the device's fastest", parse=nonneg_int
    )
    data_on_device: bool | None = option(
        None, "hold the training set on the device and draw batches in-graph", kind="toggle"
    )
    precision: str = option(
        "auto", "mixed_* compute in half precision with float32 weights", choices=PRECISIONS
    )
    # Recipe (docs/best.md): a named preset, augmentation and the imbalance remedies.
    preset: str = option(
        "default", "a named set of flag values; flags given explicitly win", choices=PRESETS
    )
    augment: str = option("none", "distort training batches in-graph", choices=AUGMENTS)
    rotate: float = option(0.0, "max rotation, degrees", parse=nonneg_float)
    scale: float = option(0.0, "max relative scaling, per axis", parse=fraction)
    shear: float = option(0.0, "max horizontal shear, degrees", parse=nonneg_float)
    translate: float = option(0.0, "max shift, pixels", parse=nonneg_float)
    elastic_sigma: float = option(
        4.0, "elastic: Gaussian width of the displacement field, pixels", parse=positive_float
    )
    elastic_alpha: float = option(
        34.0, "elastic: scale of the displacement field, pixels", parse=nonneg_float
    )
    # Evaluate an exponential moving average of the weights; 0 = off.
    ema_decay: float = option(
        0.0,
        "evaluate, save and export a moving average of the weights (e.g. 0.999); 0 = off",
        parse=fraction,
    )
    augment_digits: str = option(
        "", "augment only these classes, e.g. 9 or 3,5; default: all", parse=digits
    )
    class_weights: str = option(
        "none",
        "balanced: weight each example's loss by N / (10 * its class count)",
        choices=("none", "balanced"),
    )
    balance: str = option(
        "none",
        "oversample: draw training batches with every class equally likely",
        choices=("none", "oversample"),
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Rebuild a Config from `config.json`; unknown keys are an error, not silently dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"config has unknown keys: {', '.join(unknown)}")
        values = dict(values)
        if "hidden" in values:
            values["hidden"] = tuple(int(h) for h in values["hidden"])
        return cls(**values)


_EXPLICIT = "_config_explicit"  # the namespace attribute listing the config flags given


def _given(namespace: argparse.Namespace, dest: str) -> None:
    """Note that the command line set `dest`, so a preset leaves it alone whatever its value."""
    setattr(namespace, _EXPLICIT, {*getattr(namespace, _EXPLICIT, ()), dest})


class _Store(argparse.Action):
    """A flag with a value: stored like argparse's default action, and noted as given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        _given(namespace, self.dest)


class _Off(argparse.Action):
    """`--no-<field>`: stores False and is noted as given."""

    def __init__(self, option_strings, dest, default=True, help=None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, False)
        _given(namespace, self.dest)


class _Toggle(argparse.BooleanOptionalAction):
    """`--x/--no-x`, noted as given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        super().__call__(parser, namespace, values, option_string)
        _given(namespace, self.dest)


_ACTIONS: dict[str, type[argparse.Action]] = {"value": _Store, "off": _Off, "toggle": _Toggle}


def add_config_flags(parser: argparse.ArgumentParser, defaults: Config = Config()) -> None:
    """Add one flag per Config field, generated from its `Flag`; each defaults to `defaults`."""
    for field in dataclasses.fields(Config):
        flag: Flag = field.metadata["flag"]
        extra: dict[str, Any] = {}
        if flag.kind == "value":
            extra = dict(type=flag.parse, choices=flag.choices, metavar=flag.metavar)
        parser.add_argument(
            flag.option(field.name),
            dest=field.name,
            action=_ACTIONS[flag.kind],
            default=getattr(defaults, field.name),
            help=flag.help,
            **extra,
        )


def explicit_fields(source: argparse.Namespace | Sequence[str] | None = None) -> set[str]:
    """The Config fields set on the command line, whatever their value (defaults excluded).

    `source` is a namespace parsed by a parser with `add_config_flags`, or the argv (None: this
    process's) to parse for the config flags alone, other flags ignored.
    """
    if isinstance(source, argparse.Namespace):
        return set(getattr(source, _EXPLICIT, ()))
    parser = ArgumentParser(add_help=False)
    add_config_flags(parser)
    known, _ = parser.parse_known_args(source)
    return explicit_fields(known)


def config_from_args(args: argparse.Namespace, *, preset: bool = True) -> Config:
    """The Config of parsed flags, with the chosen preset's values for fields not given.

    A preset other than `default` is announced on stderr with what it set. `preset=False` builds
    the Config from the flags alone: a resumed run keeps its saved config rather than getting
    the preset applied again (see rundir.config_for_resume).
    """
    names = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in vars(args).items() if k in names})
    if not preset or config.preset == "default":  # the default preset changes nothing
        return config
    explicit = explicit_fields(args)
    config = presets.apply_preset(config, explicit)
    print(presets.describe(config, explicit), file=sys.stderr)
    return config


def parse_config(argv: Sequence[str] | None = None, description: str = "") -> Config:
    """Parse flags into a Config, preset applied. Bad values exit with one `error:` line (code 2)."""
    parser = ArgumentParser(description=description)
    add_config_flags(parser)
    return config_from_args(parser.parse_args(argv))


def with_overrides(config: Config, **changes: Any) -> Config:
    """A copy of `config` with some fields changed (the dataclass stays frozen)."""
    return dataclasses.replace(config, **changes)
