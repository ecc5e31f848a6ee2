"""Strict YAML into typed dataclasses: the machinery behind the recipe (posttrain/recipe/config.py).

Every error names the file and the dotted key (`sft.learning_rate`, `prompts.sources[1].path`), so a user
fixes a recipe from the message alone. Unknown keys, wrong types and missing required keys are errors.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `2e-5` as a float (YAML 1.2; PyYAML's 1.1 rules need a dot: `2.0e-5`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


class RecipeError(ValueError):
    """A recipe (or override) is invalid; the message names the file and dotted key."""


def read_yaml(path: Path) -> dict:
    """A recipe file's top-level mapping (errors name the file)."""
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    return data


def apply_override(data: dict, item: str, path: Path) -> None:
    """Sets `dotted.key=value` (the value read as YAML) in the raw recipe mapping `data`."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise RecipeError(f"{path}: override {item!r}: expected dotted.key=value")
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"{path}: override {item!r}: {'.'.join(parents[: i + 1])} is not a section")
    try:
        node[leaf] = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: override {item!r}: value of {key} is not valid YAML: {e}") from None


def build(cls: type, data: Any, where: str, key: str) -> Any:
    """Builds dataclass `cls` from `data`, naming `where: key` in every error."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: {key or '<top>'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown key {_dotted(key, unknown[0])} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        dotted = _dotted(key, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{where}: missing required key {dotted}")
            continue
        kwargs[name] = _convert(hints[name], data[name], where, dotted)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _convert(a, value, where, key)
            except RecipeError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{where}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: {key} must be a list, got {type(value).__name__}")
        return [_convert(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
        return {_convert(args[0], k, where, key): _convert(args[1], v, where, _dotted(key, k))
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise RecipeError(f"{where}: {key} must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _dotted(prefix: str, name: Any) -> str:
    return f"{prefix}.{name}" if prefix else str(name)
