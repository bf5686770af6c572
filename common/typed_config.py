"""Typed configs from YAML: a nested mapping becomes nested dataclasses (frozen ones too, lists as tuples), strictly
(unknown keys and wrong types are one-line errors), with `section.key=value` overrides. Training configs and study
configs are built with it, and study configs embed the stages' own settings types through it.

A YAML file may start from others: `extends: base.yaml` (or a list of files, later ones winning), paths relative to
the file; the file's own keys are merged over them, section by section. A nested section given partly keeps the
rest of its field's default (not of its class: `extraction: {layers: [fc7]}` keeps decoding's mean pooling).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from common.errors import SettingError, UserError

EXTENDS = "extends"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's mapping, merged over the files it `extends`; UserError when missing or not a mapping."""
    return _read_extended(Path(path), ())


def _read_extended(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_mapping(path)
    bases = data.pop(EXTENDS, None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise UserError(f"config file {path}: `{EXTENDS}` must name a YAML file or a list of them, not {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if base_path in seen or base_path == path.resolve():
            raise UserError(f"config file {path} extends {base}, which extends it again; break the cycle")
        merged = merge(merged, _read_extended(base_path, (*seen, path.resolve())))
    return merge(merged, data)


def _read_mapping(path: Path) -> dict[str, Any]:
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


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged over it: sections (mappings) key by key, any other value replaced."""
    merged = dict(base)
    for key, value in changes.items():
        old = merged.get(key)
        merged[key] = merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return merged


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


def build_dataclass(cls: type, data: Any, prefix: str = "", base: Any = None) -> Any:
    """Instantiate dataclass `cls` from a mapping (over `base`, an instance whose values stand for the keys not
    given), recursing into nested dataclasses; UserError names an unknown key or a bad value with its dotted
    `prefix` (the settings' own checks included)."""
    if not isinstance(data, Mapping):
        raise UserError(f"config key {prefix.rstrip('.') or '<root>'} must be a section (mapping), got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"unknown config key {prefix}{unknown[0]}; valid keys here: {', '.join(sorted(fields))}")
    values = {}
    for name, value in data.items():
        default = getattr(base, name) if base is not None else field_default(fields[name])
        values[name] = _coerce(value, hints[name], prefix + name, default)
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except SettingError as error:
        raise error.named(f"config key {prefix}{error.key}") from None


def field_default(field: dataclasses.Field) -> Any:
    """A dataclass field's default value (made by its factory), or None when it has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _coerce(value: Any, hint: Any, key: str, default: Any = None) -> Any:
    """Check `value` against a type hint (str, int, float, bool, list[T], tuple[T, ...], dict[str, T], a dataclass,
    unions of these and None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce_union(value, [a for a in args if a is not type(None)], key, default)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key} must be a list, got {value!r}; write e.g. {key}=[a,b]")
        return origin(_coerce(item, args[0], key) for item in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"config key {key} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key + ".", default if isinstance(default, hint) else None)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise UserError(f"config key {key} must be {hint.__name__}, got {value!r}")
    return value


def _coerce_union(value: Any, options: list[Any], key: str, default: Any) -> Any:
    """The value as the first type of a union it fits (e.g. `int | dict[str, int]`)."""
    errors = []
    for option in options:
        try:
            return _coerce(value, option, key, default)
        except UserError as error:
            errors.append(str(error))
    raise UserError(errors[0] if len(errors) == 1 else f"config key {key} has no valid type for {value!r}")


def check_choice(key: str, value: Any, choices: tuple[Any, ...]) -> None:
    """The one check that a setting is one of its `choices`: SettingError unless it is."""
    if value not in choices:
        raise SettingError(key, f"is {value!r}; valid values: {', '.join(map(str, choices))}")


def check_at_least(key: str, value: float | None, minimum: float) -> None:
    """SettingError unless `value` (None: not set) is at least `minimum`."""
    if value is not None and value < minimum:
        raise SettingError(key, f"must be at least {minimum}, not {value}")


def part_of(obj: Any, cls: type) -> Any:
    """The `cls` made of `obj`'s fields of the same names (e.g. a study stage's settings of its command)."""
    return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls) if f.init})
