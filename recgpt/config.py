"""Strict YAML configs for recgpt's own commands: dataclass schemas, ``key=value`` overrides, clear errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its schema; the message names the file and key."""


def load_config(schema: type[T], path: str | Path | None, overrides: Sequence[str] = ()) -> T:
    """Load a YAML file into the dataclass ``schema``, applying ``key=value`` overrides (dotted keys).

    Unknown keys, wrong types and missing required values are errors that name the file and the key. An
    optional top-level ``variables:`` section holds scratch values for ``${variables.x}`` interpolation, as in
    llm-foundry recipes; it is resolved and then dropped.

    Args:
        schema: A dataclass type whose fields (and nested dataclasses) are the allowed keys.
        path: The YAML file, or None to start from the schema's defaults.
        overrides: ``key=value`` strings, e.g. ``["output=artifacts/x", "max_users=50"]``.

    Raises:
        ConfigError: Naming the file and the offending key.
    """
    where = str(path) if path is not None else "defaults"
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file not found: {where}")
    try:
        raw = OmegaConf.load(path) if path is not None else OmegaConf.create({})
        if not isinstance(raw, DictConfig):
            raise ConfigError(f"{where}: the top level must be a mapping of keys to values")
        raw = OmegaConf.merge(raw, OmegaConf.from_dotlist(list(overrides)))
        OmegaConf.resolve(raw)
        raw.pop("variables", None)
        typed = OmegaConf.merge(OmegaConf.structured(schema), raw)
        return OmegaConf.to_object(typed)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        raise ConfigError(f"{where}: key '{key}': {message}" if key else f"{where}: {message}") from error
