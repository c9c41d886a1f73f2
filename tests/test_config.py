"""The flags generated from the Config fields: spelling, defaults, validation, presets, resume."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
from conftest import script_main

import mlp_core.config
from mlp_core.config.cli import ArgumentParser
from mlp_core.config.config import (
    Config,
    add_config_flags,
    config_from_args,
    explicit_fields,
    parse_config,
)
from mlp_core.config.presets import PRESETS, describe
from mlp_core.training.rundir import create_run_dir

# One command line per field, as users type it, and the value it must give. Every field is here,
# so a new field without a flag, or a flag renamed, fails `test_every_field_has_its_flag`.
SAMPLES: dict[str, tuple[list[str], object]] = {
    "epochs": (["--epochs", "3"], 3),
    "batch_size": (["--batch-size", "64"], 64),
    "hidden": (["--hidden", "none"], ()),
    "activation": (["--activation", "gelu"], "gelu"),
    "dropout": (["--dropout", "0.2"], 0.2),
    "initializer": (["--initializer", "he_normal"], "he_normal"),
    "optimizer": (["--optimizer", "sgd"], "sgd"),
    "lr": (["--lr", "0.1"], 0.1),
    "momentum": (["--momentum", "0.5"], 0.5),
    "weight_decay": (["--weight-decay", "0.01"], 0.01),
    "schedule": (["--schedule", "constant"], "constant"),
    "warmup_epochs": (["--warmup-epochs", "0.5"], 0.5),
    "label_smoothing": (["--label-smoothing", "0.1"], 0.1),
    "l2": (["--l2", "1e-4"], 1e-4),
    "clip_norm": (["--clip-norm", "1"], 1.0),
    "seed": (["--seed", "7"], 7),
    "val_size": (["--val-size", "0"], 0),
    "normalize": (["--no-normalize"], False),
    "train_subset": (["--train-subset", "100"], 100),
    "checkpoint_every": (["--checkpoint-every", "0"], 0),
    "summaries": (["--no-summaries"], False),
    "log_every": (["--log-every", "5"], 5),
    "histogram_every": (["--histogram-every", "0"], 0),
    "profile_steps": (["--profile-steps", "03:9"], "3:9"),
    "data_dir": (["--data-dir", "/x"], "/x"),
    "logdir": (["--logdir", "/tmp/l"], "/tmp/l"),
    "run_name": (["--run-name", "mine"], "mine"),
    "strategy": (["--strategy", "mirrored"], "mirrored"),
    "logical_cpus": (["--logical-cpus", "2"], 2),
    "jit_compile": (["--no-jit"], False),
    "steps_per_call": (["--steps-per-call", "4"], 4),
    "data_on_device": (["--data-on-device"], True),
    "precision": (["--precision", "mixed_bfloat16"], "mixed_bfloat16"),
    "preset": (["--preset", "quick"], "quick"),
    "augment": (["--augment", "affine+elastic"], "affine+elastic"),
    "rotate": (["--rotate", "8"], 8.0),
    "scale": (["--scale", "0.08"], 0.08),
    "shear": (["--shear", "8"], 8.0),
    "translate": (["--translate", "1"], 1.0),
    "elastic_sigma": (["--elastic-sigma", "6"], 6.0),
    "elastic_alpha": (["--elastic-alpha", "30"], 30.0),
    "ema_decay": (["--ema-decay", "0.999"], 0.999),
    "augment_digits": (["--augment-digits", "5,3,3"], "3,5"),
    "class_weights": (["--class-weights", "balanced"], "balanced"),
    "balance": (["--balance", "oversample"], "oversample"),
}
FIELDS = [f.name for f in dataclasses.fields(Config)]


def config_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="train.py")
    add_config_flags(parser)
    return parser


def test_every_field_has_its_flag_and_the_flag_defaults_to_the_field():
    assert list(SAMPLES) == FIELDS  # same names, same order
    given = config_parser().parse_args([])
    assert {name: getattr(given, name) for name in FIELDS} == dataclasses.asdict(Config())
    assert explicit_fields(given) == set()
    assert parse_config([]) == Config() and config_from_args(given) == Config()


@pytest.mark.parametrize("name", FIELDS)
def test_each_flag_sets_its_field_alone(name):
    argv, value = SAMPLES[name]
    given = config_parser().parse_args(argv)
    assert value != getattr(Config(), name)  # the sample shows the flag doing something
    assert getattr(given, name) == value and explicit_fields(given) == {name}
    assert explicit_fields(argv) == {name}
    others = {n: getattr(given, n) for n in FIELDS if n != name}
    assert others == {n: getattr(Config(), n) for n in others}


def test_the_paired_switches_and_a_repeated_flag():
    parse = config_parser().parse_args
    assert parse(["--jit"]).jit_compile is True and parse(["--no-jit"]).jit_compile is False
    assert parse(["--no-data-on-device"]).data_on_device is False
    assert parse(["--hidden", "1024,64"]).hidden == (1024, 64)
    assert parse(["--epochs", "3", "--epochs", "4"]).epochs == 4


@pytest.mark.parametrize(
    "flags",
    [
        ["--batch-size", "0"],
        ["--epochs", "x"],
        ["--lr", "nan"],
        ["--lr", "inf"],
        ["--weight-decay", "-1"],
        ["--hidden", "512,,256"],
        ["--hidden", "0,3"],
        ["--dropout", "1"],
        ["--seed", "-1"],
        ["--profile-steps", "9:3"],
        ["--profile-steps", "0:2"],
        ["--run-name", "../x"],
        ["--run-name", ".hidden"],
        ["--augment-digits", "10"],
        ["--elastic-sigma", "0"],
        ["--optimizer", "adagrad"],
        ["--preset", "fastest"],
        ["--jit=1"],
        ["--normalize"],
    ],
)
def test_a_bad_value_is_exit_2_and_one_error_line(flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        config_parser().parse_args(flags)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert flags[0].split("=")[0] in err  # names the flag at fault


def test_presets_fill_only_the_fields_not_given(capsys):
    best = parse_config(["--preset", "best"])
    assert best == dataclasses.replace(Config(), preset="best", **PRESETS["best"])
    assert capsys.readouterr().err == describe(best, {"preset"}) + "\n"
    mine = parse_config(["--preset", "best", "--epochs", "20", "--hidden", "64", "--no-jit"])
    assert (mine.epochs, mine.hidden, mine.jit_compile) == (20, (64,), False)
    assert mine.lr == PRESETS["best"]["lr"]  # the fields not given still come from the preset
    capsys.readouterr()
    parse_config(["--epochs", "2"])
    assert capsys.readouterr().err == ""  # the default preset is not announced


class Seen(Exception):
    """Raised by the stand-in for training: carries the Config the script built."""


def capture(monkeypatch, target: str) -> None:
    def stand_in(config, *args, **kwargs):
        raise Seen(config)

    monkeypatch.setattr(target, stand_in)


def config_seen_by(monkeypatch, script: str, target: str, *argv: str) -> Config:
    capture(monkeypatch, target)
    with pytest.raises(Seen) as seen:
        script_main(script)(list(argv))
    return seen.value.args[0]


# Each script that takes config flags, and the function it hands its Config to.
SCRIPTS = [
    ("train.py", "mlp_core.training.loop.train_and_evaluate"),
    ("mission.py", "mlp_core.training.loop.train_and_evaluate"),
    ("summary_cost.py", "mlp_core.benchmark.summary_cost.measure"),
    ("augment_cost.py", "mlp_core.benchmark.augment_cost.augmentation_cost"),
    ("ablate_normalization.py", "mlp_core.analysis.ablation.ablate_normalization"),
    ("ablate_imbalance.py", "mlp_core.analysis.imbalance.ablate_imbalance"),
]


@pytest.mark.parametrize("script, target", SCRIPTS)
def test_every_script_applies_the_preset(monkeypatch, script, target):
    if script == "mission.py":  # it explores the data set before training: skip that part
        monkeypatch.setattr("mlp_core.core.data.load_mnist", lambda data_dir=None: None)
        monkeypatch.setattr("mlp_core.analysis.explore.explore", lambda data, out: {})
        monkeypatch.setattr("mlp_core.analysis.explore.report", lambda stats: "")
    # --val-size: ablate_imbalance needs a validation split, which `best` drops
    config = config_seen_by(monkeypatch, script, target, "--preset", "best", "--val-size", "5000")
    assert config.hidden == (1024, 1024) and config.epochs == PRESETS["best"]["epochs"]
    assert config.val_size == 5000 and config.preset == "best"


def test_a_resumed_run_keeps_its_saved_config(tmp_path, monkeypatch, capsys):
    saved = Config(preset="best", epochs=2, hidden=(16,), logdir=str(tmp_path), run_name="r")
    run_dir = create_run_dir(saved)
    target = "mlp_core.training.loop.train_and_evaluate"
    flags = ["--logdir", str(tmp_path), "--run-name", "r", "--resume"]
    assert config_seen_by(monkeypatch, "train.py", target, *flags) == saved
    assert config_seen_by(monkeypatch, "train.py", target, *flags, "--preset", "best") == saved
    assert capsys.readouterr().err == ""  # no preset announced: none was applied
    assert Config.from_dict(json.loads((run_dir / "config.json").read_text())) == saved


def test_the_package_exports_the_config():
    assert mlp_core.config.Config is Config and mlp_core.config.parse_config is parse_config
