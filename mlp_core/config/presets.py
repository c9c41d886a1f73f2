"""Named sets of flag values (`--preset default|best|quick`); any flag given explicitly wins.

A preset only fills in fields the command line did not set, so `--preset best --epochs 5` is the
best recipe for five epochs. The chosen preset's name is a Config field: it is saved in
config.json with the values it filled in. The `best` values were chosen on the validation split
(docs/best.md); the test set played no part in choosing them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # config.py imports this module for its --preset choices: no cycle at run time
    from mlp_core.config.config import Config

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "best": {
        # Chosen with --val-size 10000 (docs/best.md); the recipe then trains on all 60,000.
        "epochs": 56,
        "val_size": 0,
        "hidden": (1024, 1024),
        "dropout": 0.1,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "augment": "affine+elastic",
        "rotate": 8.0,
        "scale": 0.08,
        "shear": 8.0,
        "translate": 1.0,
        "elastic_sigma": 6.0,
        "elastic_alpha": 30.0,
    },
    "quick": {"epochs": 3, "hidden": (256,), "dropout": 0.1, "lr": 2e-3},
}


def apply_preset(config: Config, explicit: set[str]) -> Config:
    """`config` with its preset's values, except for the fields given explicitly."""
    values = {key: value for key, value in PRESETS[config.preset].items() if key not in explicit}
    return dataclasses.replace(config, **values)


def describe(config: Config, explicit: set[str]) -> str:
    """One line for the console: the preset's values, and which explicit flags overrode it."""
    values = PRESETS[config.preset]
    shown = " ".join(
        f"--{key.replace('_', '-')} {_text(value)}"
        for key, value in values.items()
        if key not in explicit
    )
    overridden = sorted(f"--{key.replace('_', '-')}" for key in set(values) & explicit)
    line = f"preset {config.preset}: {shown or '(the Config defaults)'}"
    return line + (f" (given explicitly: {' '.join(overridden)})" if overridden else "")


def _text(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
