"""Config dataclasses from JSON, checked against their annotations.

A ``--config`` file or a ``config.json`` may hold any JSON. A value of the wrong type (a float where a step count
belongs, a string where a scale belongs) would otherwise pass the constructor and surface minutes later, deep inside a
training loop or a model's construction; here it becomes one line naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path

from hyperbagel.errors import HyperBagelError


def matches(value, kind) -> bool:
    """Whether ``value`` (as JSON or a constructor leaves it) is of the annotated type ``kind``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if origin is tuple or kind is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(matches(v, a) for v, a in zip(value, args)))
    if origin is list or kind is list:
        return isinstance(value, list) and (not args or all(matches(v, args[0]) for v in value))
    if origin is dict or kind is dict:
        return isinstance(value, dict) and (not args or all(matches(k, args[0]) and matches(v, args[1])
                                                            for k, v in value.items()))
    if dataclasses.is_dataclass(kind):
        return isinstance(value, (kind, dict))
    return True  # a type this checker does not know: the constructor's own checks apply


def check_types(obj, where: str = "") -> None:
    """Every field of the dataclass ``obj`` (and of the dataclasses it holds) matches its annotation; raises
    ``ValueError`` naming the first that does not."""
    hints = typing.get_type_hints(type(obj))
    where = where or type(obj).__name__
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        _check(value, hints[f.name], f"{where}.{f.name}")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_types(value, f"{where}.{f.name}")


def _check(value, kind, where: str) -> None:
    if not matches(value, kind):
        name = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
        raise ValueError(f"{where} must be {name}, got {value!r:.60}")


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file that must hold one object."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise HyperBagelError(f"{what}: cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise HyperBagelError(f"{what}: {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise HyperBagelError(f"{what}: {path} must hold a JSON object, got {type(data).__name__}")
    return data


def config_from_json(cls, path: Path | None, fields: dict, what: str):
    """``cls(**fields)`` with the overrides in the JSON file ``path`` (if any), every field type-checked; any
    problem is one ``HyperBagelError`` line starting with ``what``."""
    overrides = read_json_object(path, what) if path is not None else {}
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(overrides) - known):
        raise HyperBagelError(f"{what}: unknown keys {unknown}; {cls.__name__} has {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    try:
        for key, value in overrides.items():  # before the constructor, whose own checks assume the types
            _check(value, hints[key], f"{cls.__name__}.{key}")
        cfg = cls(**{**fields, **overrides})
        check_types(cfg)
    except (TypeError, ValueError) as err:  # the constructors' own checks, or a wrong type
        raise HyperBagelError(f"{what}: {err}") from None
    return cfg
