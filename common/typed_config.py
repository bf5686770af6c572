"""Typed configs from YAML: a nested mapping becomes nested dataclasses, strictly (unknown keys and wrong types are
one-line errors), with `section.key=value` overrides. Training configs and study configs are built with it."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's mapping; UserError when missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"config file {path} does not exist; pass an existing YAML file, e.g. configs/tiny_face_object.yaml"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(
            f"config file {path} is not valid YAML ({str(error).splitlines()[0]}); fix its syntax"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set a dotted key in a nested dict from `key=value` (the value parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise UserError(f"override {override!r} is not key=value; write e.g. trainer.epochs=5")
    value = yaml.safe_load(raw) if raw else None
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {override!r}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


def build_dataclass(cls: type, data: Any, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping, recursing into nested dataclasses; UserError names an unknown key
    or a value of the wrong type (with its dotted `prefix`)."""
    if not isinstance(data, Mapping):
        raise UserError(f"config key {prefix.rstrip('.') or '<root>'} must be a section (mapping), got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown config key {prefix}{unknown[0]}; valid keys here: {', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        key = prefix + name
        values[name] = _coerce(value, hint, key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a simple type hint (str, int, float, bool, list[T], dict[str, T], T | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"config key {key} must be a list, got {value!r}; write e.g. {key}=[a,b]")
        return [_coerce(item, args[0], key) for item in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"config key {key} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key + ".")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise UserError(f"config key {key} must be {hint.__name__}, got {value!r}")
    return value


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """UserError unless `value` is one of `choices`."""
    if value not in choices:
        raise UserError(f"config key {key} is {value!r}; valid values: {', '.join(choices)}")
