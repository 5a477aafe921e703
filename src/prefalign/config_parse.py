"""Reading YAML configs into frozen dataclasses: keys map 1:1 to fields, unknown keys are errors
naming the closest valid one, values are checked against their annotations.

Generic: it knows no section. `prefalign.config` builds run configs with it, `prefalign.loop`
its loop configs.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as `1e-5` (PyYAML alone returns a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what to change."""


def build_dataclass(cls: type, raw: Any, where: str = "config") -> Any:
    """A frozen dataclass `cls` from nested dicts, checked as a run config is (unknown keys
    named with the closest valid one, values against their annotations); also for configs
    other than a run's, such as `prefalign loop`'s. Errors are ConfigErrors after `where: `."""
    try:
        return _build(cls, raw, "")
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; ConfigError for a missing, unreadable or
    invalid file, or one whose top level is not a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file: {error}") from None
    loaded = _parse_yaml(text, str(path))
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded or {}


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: builds no Python objects
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {error}") from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`section.key=value` set in the nested dict `raw` (deeper into a mapping field:
    `loss.params.beta=0.5`), the value parsed as YAML."""
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {item!r}: write it as section.key=value, e.g. optim.lr=1e-5")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth + 1])} is not a mapping")
    node[parts[-1]] = _parse_yaml(value, f"override {item!r}") if value.strip() else None


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:  # a section whose keys are all commented out
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'top level'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            name = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{name}: unknown key{suggest_key(str(key), list(fields))}")
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def suggest_key(key: str, valid: list[str]) -> str:
    """"; did you mean 'x'?" for a close match, then the valid keys, for an unknown-key error."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (valid keys: {', '.join(valid)})"


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `hint`; convert lists to tuples."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        others = (error.split(": ", 1)[-1] for error in errors[1:])
        raise ConfigError("; or ".join([errors[0], *others]))
    if origin is Literal:
        if value not in typing.get_args(hint):
            allowed = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{where}: must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        return _coerce_tuple(hint, value, where)
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(hint, value, where)


def _coerce_tuple(hint: Any, value: Any, where: str) -> tuple:
    if isinstance(value, str):
        value = [value]  # a single path or module name is a one-element list
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
    return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))


def _coerce_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads "1e-5" (no dot) as a string
        except ValueError:
            pass
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")


def plain_data(value: Any) -> Any:
    """Mappings as dicts and sequences as lists, all the way down (YAML/JSON-ready)."""
    if isinstance(value, Mapping):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    return value
