"""Turn plain YAML values into typed dataclasses, reporting every mistake with its dotted key.

Supports the types the config uses: bool, int, float, str, Optional/Union, Literal, list[...], dict[...] and nested
dataclasses. The rules hold for every field, so a new key is checked without code here: a bool is never taken for a
number (nor a number for a bool), an int fits in 64 bits, a float is finite, a string holds no NUL byte, a Literal
matches in type as well as value (`2.0` and `true` are not the `2` and `1` of `Literal[0, 1, 2, 3]`).

Field metadata adds per-key checks: bounds `gt`/`ge`/`lt`/`le` (on a list: on each item), `len` (a list's exact
length), `nonempty` (a string that must not be blank, e.g. a path: '' would silently mean the current directory);
`key` is the YAML key of a field whose name cannot be it (`async`). A section's `__post_init__` may refuse a
combination of its values by raising ValueError(message): it is reported under the section's key. Unknown keys are
refused with the closest valid key suggested. Messages repeat a bad value shortened (errors.shown).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import types
import typing
from typing import Any, Literal, Union

from dist_train.errors import UsageError, closest, key_text, one_of, shown

_NONE = type(None)
INT_MAX = 2**63 - 1  # what torch (and a C long) can hold; beyond it a seed or a size cannot be used


def build(cls, data: Any, key: str):
    """An instance of dataclass `cls` from mapping `data`; `key` is the dotted path used in messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{key}: expected a mapping of {cls.__name__} keys, got {shown(data)}")
    hints = type_hints(cls)
    fields = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            raise UsageError(
                f"{_join(key, key_text(name))}: unknown key{closest(name, fields)}; valid keys: {one_of(fields)}"
            )
    values = {}
    for name, f in fields.items():
        path = _join(key, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UsageError(f"{path}: required key missing")
            continue
        value = coerce(data[name], hints[f.name], path)
        check_field(value, f.metadata, path)
        values[f.name] = value
    try:
        return cls(**values)
    except ValueError as e:  # a section's own cross-field check (__post_init__)
        raise UsageError(f"{key or cls.__name__}: {e}") from None


@functools.lru_cache(maxsize=None)
def type_hints(cls) -> dict[str, Any]:
    """The resolved field types of a dataclass (its annotations are strings: resolving them costs ~1 ms)."""
    return typing.get_type_hints(cls)


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
        errors = []
        for option in inner:
            try:
                return coerce(value, option, key)
            except UsageError as e:
                errors.append(e)
        if len(inner) == 1:
            raise errors[0]
        raise UsageError(f"{key}: expected {' or '.join(describe(a) for a in inner)}, got {shown(value)}")
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise UsageError(f"{key}: unknown value {shown(value)}{closest(value, args)}; valid: {one_of(args)}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{key}: expected true or false, got {shown(value)}")
    if tp is int:
        return _integer(value, key)
    if tp is float:
        return _number(value, key)
    if tp is str:
        if isinstance(value, str):
            text = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            text = str(value)
        else:
            raise UsageError(f"{key}: expected a string, got {shown(value)}")
        if "\0" in text:
            raise UsageError(f"{key}: contains a NUL byte ({shown(text)}); no path or name can hold one")
        return text
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key}: expected a list, got {shown(value)}")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{key}: expected a mapping, got {shown(value)}")
        if not args:
            return dict(value)
        key_type, value_type = args
        return {coerce(k, key_type, f"{key} key {shown(k, 60)}"): coerce(v, value_type, _join(key, key_text(k)))
                for k, v in value.items()}
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _integer(value: Any, key: str) -> int:
    if isinstance(value, str) and len(value) <= 100:
        # Numbers written as text: quoted, or 1e5 / 1.0e5, which YAML 1.1 reads as text (its floats need a dot and
        # a signed exponent). int() first, so that no digit is lost to a float.
        for parse in (int, float):
            try:
                value = parse(value)
                break
            except ValueError:
                pass
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{key}: expected an integer, got {shown(value)}")
    if not -INT_MAX <= value <= INT_MAX:
        raise UsageError(f"{key}: {shown(value, 40)} is out of range (an integer must be within +-(2**63 - 1))")
    return value


def _number(value: Any, key: str) -> float:
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value) if abs(value) <= 1e308 else math.inf  # float() of a huge int raises OverflowError
    elif isinstance(value, str) and len(value) <= 100:  # a number written as text, e.g. quoted
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        raise UsageError(f"{key}: expected a number, got {shown(value)}")
    if not math.isfinite(number):
        raise UsageError(f"{key}: must be a finite number, got {shown(value)}")
    return number


def check_field(value: Any, metadata, key: str) -> None:
    if value is None:
        return
    if isinstance(value, list):
        if "len" in metadata and len(value) != metadata["len"]:
            raise UsageError(f"{key}: expected a list of {metadata['len']} values, got {shown(value)}")
        for i, item in enumerate(value):
            check_bounds(item, metadata, f"{key}[{i}]")
        return
    if isinstance(value, str) and metadata.get("nonempty") and not value.strip():
        raise UsageError(f"{key}: must not be empty, got {shown(value)}")
    check_bounds(value, metadata, key)


def check_bounds(value: Any, metadata, key: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for name, holds, sign in _BOUNDS:
        if name in metadata and not holds(value, metadata[name]):
            raise UsageError(f"{key}: must be {sign} {metadata[name]}, got {shown(value, 40)}")


_BOUNDS = (("gt", operator.gt, ">"), ("ge", operator.ge, ">="), ("lt", operator.lt, "<"), ("le", operator.le, "<="))


def describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + one_of(typing.get_args(tp))
    if tp is bool:
        return "true or false"
    if tp in (int, float):
        return "a number" if tp is float else "an integer"
    if tp is str:
        return "a string"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} keys"
    origin = typing.get_origin(tp) or tp
    return {list: "a list", dict: "a mapping"}.get(origin, str(tp))


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
