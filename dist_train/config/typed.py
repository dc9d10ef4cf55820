"""Turn plain YAML values into typed dataclasses, reporting every mistake with its dotted key.

Supports the types the config uses: bool, int, float, str, Optional[...], Literal[...], list[...], dict and nested
dataclasses. Field metadata `gt`/`ge` are bounds; `key` is the YAML key of a field whose name cannot be it (`async`). Unknown keys are refused with the closest valid key suggested.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from dist_train.errors import UsageError, closest, one_of

_NONE = type(None)


def build(cls, data: Any, key: str):
    """An instance of dataclass `cls` from mapping `data`; `key` is the dotted path used in messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{key}: expected a mapping of {cls.__name__} keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            raise UsageError(
                f"{_join(key, name)}: unknown key{closest(name, fields)}; valid keys: {one_of(fields)}"
            )
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        path = _join(key, name)
        value = coerce(data[name], hints[f.name], path)
        check_bounds(value, f.metadata, path)
        values[f.name] = value
    return cls(**values)


def yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            if _NONE in args:
                return None
            raise UsageError(f"{key}: must be set, got null")
        inner = [a for a in args if a is not _NONE]
        return coerce(value, inner[0], key)
    if origin is Literal:
        if value in args:
            return value
        raise UsageError(f"{key}: unknown value {value!r}{closest(value, args)}; valid: {one_of(args)}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UsageError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise UsageError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def check_bounds(value: Any, metadata, key: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if "gt" in metadata and not value > metadata["gt"]:
        raise UsageError(f"{key}: must be > {metadata['gt']}, got {value!r}")
    if "ge" in metadata and not value >= metadata["ge"]:
        raise UsageError(f"{key}: must be >= {metadata['ge']}, got {value!r}")
    if "lt" in metadata and not value < metadata["lt"]:
        raise UsageError(f"{key}: must be < {metadata['lt']}, got {value!r}")


def to_dict(obj: Any) -> Any:
    """Plain YAML-ready data from a dataclass tree."""
    if dataclasses.is_dataclass(obj):
        return {yaml_key(f): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
