"""Strict YAML configs for recgpt's own commands: dataclass schemas, ``key=value`` overrides, clear errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf._utils import get_yaml_loader
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its schema; the message names the file and key."""


def load_config(
    schema: type[T],
    path: str | Path | None,
    overrides: Sequence[str] = (),
    check_raw: Callable[[dict[str, Any]], None] | None = None,
    validate: Callable[[T], None] | None = None,
) -> T:
    """Load a YAML file into the dataclass ``schema``, applying ``key=value`` overrides (dotted keys).

    Unknown keys, wrong types, a list where a mapping belongs (or the reverse) and missing required values are
    errors that name the file and the key. An optional top-level ``variables:`` section holds scratch values for
    ``${variables.x}`` interpolation, as in llm-foundry recipes; it is resolved and then dropped. Overrides are
    applied to the file's values in order; list entries are reached by index (``sources.0.name=x``).

    Args:
        schema: A dataclass type whose fields (and nested dataclasses) are the allowed keys.
        path: The YAML file, or None to start from the schema's defaults.
        overrides: ``key=value`` strings, e.g. ``["output=artifacts/x", "max_users=50"]``; one without ``=`` is an
            error.
        check_raw: Called with the resolved values as plain Python before typing; a ``ValueError`` it raises is
            reported with the file's name (for hints the schema cannot give).
        validate: Called with the typed config; a ``ValueError`` it raises is reported with the file's name.

    Raises:
        ConfigError: Naming the file (with the line, for YAML syntax) and the offending key.
    """
    where = str(path) if path is not None else "defaults"
    raw = _read_yaml(path) if path is not None else OmegaConf.create({})
    for override in overrides:
        _apply_override(raw, override, where)
    try:
        OmegaConf.resolve(raw)
        raw.pop("variables", None)
        plain = typing.cast(dict[str, Any], OmegaConf.to_container(raw))
        if check_raw is not None:
            check_raw(plain)
        _check_shape(schema, plain, "")
        typed = OmegaConf.merge(OmegaConf.structured(schema), raw)
        config = OmegaConf.to_object(typed)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        raise ConfigError(f"{where}: key '{key}': {message}" if key else f"{where}: {message}") from error
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from error
    if validate is not None:
        try:
            validate(config)  # type: ignore[arg-type]
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from error
    return config  # type: ignore[return-value]


def _read_yaml(path: str | Path) -> DictConfig:
    """The YAML file as a DictConfig; a missing file, bad bytes or bad syntax is one line naming the file."""
    if Path(path).is_dir():
        raise ConfigError(f"config file {path} is a directory; give a YAML file")
    if not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = OmegaConf.load(path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}{line}: not valid YAML: {problem}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not valid UTF-8 text (byte {error.start}); save the config as UTF-8") from error
    except OmegaConfBaseException as error:
        raise ConfigError(f"{path}: {str(error).splitlines()[0]}") from error
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return raw


def _apply_override(raw: DictConfig, override: str, where: str) -> None:
    """Set one ``key=value`` (the value read as YAML) in ``raw``; a mapping onto a mapping merges, else replaces.

    Raises:
        ConfigError: For a missing ``=`` or key, a value that is not YAML, or a key that cannot be set.
    """
    key, equals, text = override.partition("=")
    if not equals or not key.strip():
        raise ConfigError(f"override {override!r}: write key=value, e.g. max_users=50")
    try:
        value = yaml.load(text, Loader=get_yaml_loader())  # OmegaConf's own reading of dotlist values
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({problem}); quote it") from error
    try:
        existing = OmegaConf.select(raw, key, default=None)
        OmegaConf.update(raw, key, value, merge=isinstance(existing, DictConfig) and isinstance(value, dict))
    except (OmegaConfBaseException, IndexError, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{where}: override {override!r}: {message}") from error


def _check_shape(hint: Any, value: Any, key: str) -> None:
    """Fail where ``value`` has the wrong kind for ``hint``, naming the dotted key (``sources[0].paths``).

    Wrong kinds: a list or scalar for a mapping, the reverse, null for a key that is not optional, a list or mapping
    for a single value, an unknown key of a section. Single values are converted (and checked) by OmegaConf later.
    """
    hint, optional = _without_none(hint)
    if value is None:
        if not optional and hint is not Any:
            raise ValueError(f"key '{key}': must be set, got null")
        return
    kind = dict if dataclasses.is_dataclass(hint) or typing.get_origin(hint) is dict else typing.get_origin(hint)
    if kind not in (dict, list):
        if hint is not Any and isinstance(value, dict | list):
            raise ValueError(f"key '{key}': must be a single value, got {_kind(value)}")
        return
    if not isinstance(value, kind):
        wanted = "a mapping (key: value)" if kind is dict else "a list ([a, b] or '- a' lines)"
        raise ValueError(f"key '{key}': must be {wanted}, got {_kind(value)}")
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        known = [f.name for f in dataclasses.fields(hint)]
        for name, item in value.items():
            where = f"{key}.{name}" if key else str(name)
            if name not in known:
                raise ValueError(f"key '{where}': unknown key; known: {known}")
            _check_shape(hints[name], item, where)
        return
    args = typing.get_args(hint)
    items = value.items() if kind is dict else enumerate(value)
    for name, item in items:
        _check_shape(args[-1] if args else Any, item, f"{key}.{name}" if kind is dict else f"{key}[{name}]")


def _without_none(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None`` (and ``Optional[X]``); ``(hint, False)`` otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), len(rest) < len(typing.get_args(hint))
    return hint, False


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else repr(value)
