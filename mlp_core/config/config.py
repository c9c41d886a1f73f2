"""The one frozen dataclass of hyperparameters, and the command-line flags that override it.

Every run saves its Config as `config.json` and to TensorBoard, so a number can always be traced
back to the settings that produced it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlp_core.config.cli import ArgumentParser
from mlp_core.core.errors import UserError

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "elu", "swish")
INITIALIZERS = ("he_uniform", "glorot_uniform", "he_normal", "glorot_normal")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("cosine", "constant")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
AUGMENTS = ("none", "affine", "elastic", "affine+elastic")  # see augment.py and docs/best.md
PRESETS = ("default", "best", "quick")  # named flag sets, see presets.py


@dataclass(frozen=True)
class Config:
    """Hyperparameters and run settings; the defaults are the recipe docs/training.md reports."""

    epochs: int = 20
    batch_size: int = 128
    hidden: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    dropout: float = 0.1
    initializer: str = "he_uniform"
    optimizer: str = "adamw"
    lr: float = 5e-3
    momentum: float = 0.9
    weight_decay: float = 0.05  # decay per step is lr * wd: it matters in long runs
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    l2: float = 0.0
    clip_norm: float = 0.0
    seed: int = 0
    val_size: int = 10_000
    normalize: bool = True
    train_subset: int = 0
    checkpoint_every: int = 1000
    summaries: bool = True
    log_every: int = 100
    histogram_every: int = 1
    profile_steps: str = ""  # "A:B": capture a tf.profiler trace of steps A..B; "" = off
    data_dir: str | None = None
    logdir: str = "logs"
    run_name: str | None = None
    strategy: str = "default"
    logical_cpus: int = 0
    # Fast paths; None / 0 / "auto" = the fastest correct choice for the device (see loop.py).
    jit_compile: bool | None = None
    steps_per_call: int = 0
    data_on_device: bool | None = None
    precision: str = "auto"
    # Recipe (docs/best.md): a named preset, augmentation and the imbalance remedies.
    preset: str = "default"
    augment: str = "none"
    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    translate: float = 0.0
    elastic_sigma: float = 4.0
    elastic_alpha: float = 34.0
    ema_decay: float = 0.0  # evaluate an exponential moving average of the weights; 0 = off
    augment_digits: str = ""
    class_weights: str = "none"
    balance: str = "none"

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


def _positive_int(text: str) -> int:
    value = _parse(int, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _nonneg_int(text: str) -> int:
    value = _parse(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _parse(float, text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    value = _parse(float, text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _parse(float, text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def _hidden(text: str) -> tuple[int, ...]:
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


def _step_range(text: str) -> str:
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


def _run_name(text: str) -> str:
    problem = run_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _digits(text: str) -> str:
    """'9' or '3,5' (classes 0..9, kept as text in the Config); '' = every class."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() and len(p) == 1 for p in parts):
        raise argparse.ArgumentTypeError(f"must be digits like 9 or 3,5, got {text!r}")
    return ",".join(sorted(set(parts)))


def _parse(kind: type, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None


def add_config_flags(parser: argparse.ArgumentParser, defaults: Config = Config()) -> None:
    """Add one kebab-case flag per Config field; each defaults to the dataclass value."""
    d = defaults
    add = parser.add_argument
    add("--epochs", type=_positive_int, default=d.epochs, help="training epochs")
    add("--batch-size", type=_positive_int, default=d.batch_size, help="examples per step")
    add("--hidden", type=_hidden, default=d.hidden, help="hidden sizes, e.g. 512,256")
    add("--activation", choices=ACTIVATIONS, default=d.activation)
    add("--dropout", type=_fraction, default=d.dropout, help="dropout rate on hidden layers")
    add("--initializer", choices=INITIALIZERS, default=d.initializer)
    add("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    add("--lr", type=_positive_float, default=d.lr, help="peak learning rate")
    add("--momentum", type=_fraction, default=d.momentum, help="for momentum/nesterov SGD")
    add("--weight-decay", type=_nonneg_float, default=d.weight_decay, help="AdamW decoupled decay")
    add("--schedule", choices=SCHEDULES, default=d.schedule, help="cosine = warm-up then cosine")
    add("--warmup-epochs", type=_nonneg_float, default=d.warmup_epochs)
    add("--label-smoothing", type=_fraction, default=d.label_smoothing)
    add("--l2", type=_nonneg_float, default=d.l2, help="L2 penalty on weights, added to the loss")
    add("--clip-norm", type=_nonneg_float, default=d.clip_norm, help="global-norm clip; 0 = off")
    add("--seed", type=_nonneg_int, default=d.seed)
    add("--val-size", type=_nonneg_int, default=d.val_size, help="last N training images")
    add(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="feed raw 0..255 pixels (for the normalization experiment)",
    )
    add(
        "--train-subset",
        type=_nonneg_int,
        default=d.train_subset,
        help="train on the first N training images only; 0 = all",
    )
    add(
        "--checkpoint-every",
        type=_nonneg_int,
        default=d.checkpoint_every,
        help="also checkpoint every N steps mid-epoch; 0 = at epoch ends only",
    )
    add(
        "--no-summaries",
        dest="summaries",
        action="store_false",
        help="write no TensorBoard summaries (for throughput comparisons)",
    )
    add(
        "--log-every",
        type=_nonneg_int,
        default=d.log_every,
        help="TensorBoard training scalars every N steps; 0 = off",
    )
    add(
        "--histogram-every",
        type=_nonneg_int,
        default=d.histogram_every,
        help="weight, gradient and activation histograms every N epochs; 0 = off",
    )
    add(
        "--profile-steps",
        type=_step_range,
        default=d.profile_steps,
        metavar="A:B",
        help="capture a TensorBoard profile of training steps A..B (from 1) into the run directory",
    )
    add(
        "--jit",
        dest="jit_compile",
        action=argparse.BooleanOptionalAction,
        default=d.jit_compile,
        help="compile the step with XLA (default: the device's fastest)",
    )
    add(
        "--steps-per-call",
        type=_nonneg_int,
        default=d.steps_per_call,
        help="training steps per compiled call; 0 = the device's fastest",
    )
    add(
        "--data-on-device",
        action=argparse.BooleanOptionalAction,
        default=d.data_on_device,
        help="hold the training set on the device and draw batches in-graph",
    )
    add(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="mixed_* compute in half precision with float32 weights",
    )
    add("--data-dir", default=d.data_dir, help="IDX files or mnist.npz; default: packaged copy")
    add("--logdir", default=d.logdir, help="parent directory of run directories")
    add(
        "--run-name",
        type=_run_name,
        default=d.run_name,
        help="run directory name; default: timestamp",
    )
    add(
        "--strategy",
        choices=STRATEGIES,
        default=d.strategy,
        help="tf.distribute: one device, all local GPUs (mirrored) or the TF_CONFIG cluster",
    )
    add(
        "--logical-cpus",
        type=_nonneg_int,
        default=d.logical_cpus,
        help="split the CPU into N logical devices (for mirrored without GPUs); 0 = no split",
    )
    _add_recipe_flags(add, d)


def _add_recipe_flags(add, d: Config) -> None:
    """Preset, augmentation strengths and the imbalance remedies (docs/best.md)."""
    add(
        "--preset",
        choices=PRESETS,
        default=d.preset,
        help="a named set of flag values; flags given explicitly win",
    )
    add("--augment", choices=AUGMENTS, default=d.augment, help="distort training batches in-graph")
    add("--rotate", type=_nonneg_float, default=d.rotate, help="max rotation, degrees")
    add("--scale", type=_fraction, default=d.scale, help="max relative scaling, per axis")
    add("--shear", type=_nonneg_float, default=d.shear, help="max horizontal shear, degrees")
    add("--translate", type=_nonneg_float, default=d.translate, help="max shift, pixels")
    add(
        "--elastic-sigma",
        type=_positive_float,
        default=d.elastic_sigma,
        help="elastic: Gaussian width of the displacement field, pixels",
    )
    add(
        "--elastic-alpha",
        type=_nonneg_float,
        default=d.elastic_alpha,
        help="elastic: scale of the displacement field, pixels",
    )
    add(
        "--ema-decay",
        type=_fraction,
        default=d.ema_decay,
        help="evaluate, save and export a moving average of the weights (e.g. 0.999); 0 = off",
    )
    add(
        "--augment-digits",
        type=_digits,
        default=d.augment_digits,
        help="augment only these classes, e.g. 9 or 3,5; default: all",
    )
    add(
        "--class-weights",
        choices=("none", "balanced"),
        default=d.class_weights,
        help="balanced: weight each example's loss by N / (10 * its class count)",
    )
    add(
        "--balance",
        choices=("none", "oversample"),
        default=d.balance,
        help="oversample: draw training batches with every class equally likely",
    )


def explicit_fields(argv: Sequence[str] | None = None) -> set[str]:
    """The Config fields set on the command line, whatever their value (defaults excluded)."""
    shadow = argparse.ArgumentParser(add_help=False)
    add_config_flags(shadow)
    for action in shadow._actions:  # only flags that were given end up in the namespace
        action.default, action.type = argparse.SUPPRESS, None
    known, _ = shadow.parse_known_args(argv)
    return set(vars(known))


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the Config from parsed flags (only fields the dataclass knows)."""
    names = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in vars(args).items() if k in names})


def parse_config(argv: Sequence[str] | None = None, description: str = "") -> Config:
    """Parse flags into a Config. Bad values exit with one `error:` line (code 2)."""
    parser = ArgumentParser(description=description)
    add_config_flags(parser)
    return config_from_args(parser.parse_args(argv))


def with_overrides(config: Config, **changes: Any) -> Config:
    """A copy of `config` with some fields changed (the dataclass stays frozen)."""
    return dataclasses.replace(config, **changes)
