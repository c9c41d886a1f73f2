"""The run configuration: the `Config` dataclass and the command-line flags generated from it."""

from mlp_core.config.config import (
    Config,
    add_config_flags,
    config_from_args,
    explicit_fields,
    parse_config,
    with_overrides,
)

__all__ = [
    "Config",
    "add_config_flags",
    "config_from_args",
    "explicit_fields",
    "parse_config",
    "with_overrides",
]
