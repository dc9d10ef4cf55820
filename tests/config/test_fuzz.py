"""Property-based fuzzing of config loading (hypothesis): whatever a config file or an override holds, loading it
either gives a Config in which every value has its declared type and bounds, or a UsageError of at most 3 lines,
bounded in length, naming the key (or the file). Never another exception, never a value the run cannot use.

The keys are found by walking the schema (the dataclass fields of Config and of every bundled recipe's sections, with
their types and metadata bounds), so a key added later is fuzzed without a change here. Loading runs in-process (the
same `load_file` / `apply_overrides` / `from_dict` steps as `dist_train.config.load`); tests/test_cli.py checks
the exit code and stderr of real CLI runs. Hypothesis runs derandomized and without an example database, so CI sees
the same examples on every run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import operator
import string
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dist_train.callbacks import BUILTIN, resolve_callback
from dist_train.config import apply_overrides, from_dict, load, load_file
from dist_train.config.schema import Config
from dist_train.config.typed import type_hints
from dist_train.config.yaml_loader import MAX_DEPTH
from dist_train.errors import UsageError
from dist_train.recipe import builtin_recipes, resolve_recipe
from support import RECIPES

INT_MAX = 2**63 - 1
MAX_MESSAGE_CHARS = 1000  # key + shortened value (200) + the valid choices
NONE = type(None)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present: the tests' own YAML is not under test


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------------------------------ the schema, walked


@dataclasses.dataclass(frozen=True)
class Key:
    path: str  # dotted YAML key
    tp: Any
    meta: Any
    recipe: str  # the bundled recipe whose config holds it

    def __str__(self) -> str:
        return self.path


def walk(cls, prefix: str, recipe: str):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name == "sections":
            continue
        path = f"{prefix}.{f.metadata.get('key', f.name)}" if prefix else f.metadata.get("key", f.name)
        tp = hints[f.name]
        yield Key(path, tp, dict(f.metadata), recipe)
        for inner in typing.get_args(tp) or (tp,):
            if dataclasses.is_dataclass(inner):
                yield from walk(inner, path, recipe)


RECIPE_NAMES = builtin_recipes()
KEYS = [*walk(Config, "", "mlp_regression")]
for _name in RECIPE_NAMES:
    for _section, _cls in resolve_recipe(_name).sections.items():
        KEYS += walk(_cls, _section, _name)
BASE = {name: load_file(RECIPES / f"{name}.yaml") for name in RECIPE_NAMES}
# The keys of each registered callback's own Config, as `callbacks: [{name: NAME, KEY: value}]` entries.
CALLBACK_KEYS = [(name, key) for name in BUILTIN if (cls := resolve_callback(name, "callbacks[0]")).Config
                 for key in walk(cls.Config, "", "mlp_regression")]


def test_the_walk_finds_core_and_recipe_keys():
    paths = {k.path for k in KEYS}
    assert {"seed", "optimizer.betas", "deepspeed.zero_stage", "checkpoint.async", "train.early_stopping.patience",
            "tracking.wandb.project", "model.hidden", "dataset.n_train", "sample.temperature"} <= paths
    assert len(RECIPE_NAMES) >= 5 and len(KEYS) > 60
    assert ("profiler", "start") in {(name, key.path) for name, key in CALLBACK_KEYS}


# ------------------------------------------------------------------------------------------ the oracle


def conforms(value: Any, tp: Any, meta, key: str) -> None:
    """Assert that an accepted value is one the run can use: the declared type exactly, finite, in its bounds."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return
    if origin in (Union, types.UnionType):
        if value is None:
            assert NONE in args, key
            return
        errors = []
        for option in (a for a in args if a is not NONE):
            try:
                return conforms(value, option, meta, key)
            except AssertionError as e:
                errors.append(e)
        raise AssertionError(f"{key}: {value!r} matches none of {tp}: {errors}")
    if origin is Literal:
        assert any(type(value) is type(a) and value == a for a in args), (key, value)
    elif dataclasses.is_dataclass(tp):
        assert isinstance(value, tp), (key, value)
        hints = type_hints(tp)
        for f in dataclasses.fields(tp):
            conforms(getattr(value, f.name), hints[f.name], f.metadata, f"{key}.{f.name}")
    elif tp is bool:
        assert type(value) is bool, (key, value)
    elif tp is int:
        assert type(value) is int and -INT_MAX <= value <= INT_MAX, (key, value)
        in_bounds(value, meta, key)
    elif tp is float:
        assert type(value) is float and math.isfinite(value), (key, value)
        in_bounds(value, meta, key)
    elif tp is str:
        assert type(value) is str and "\0" not in value, (key, value)
        if meta.get("nonempty"):
            assert value.strip(), (key, value)
    elif origin is list:
        assert type(value) is list, (key, value)
        if "len" in meta:
            assert len(value) == meta["len"], (key, value)
        for i, item in enumerate(value):
            conforms(item, args[0], {k: v for k, v in meta.items() if k != "len"}, f"{key}[{i}]")
    elif origin is dict or tp is dict:
        assert type(value) is dict, (key, value)
    else:
        raise AssertionError(f"{key}: the fuzzer does not know type {tp!r}: teach conforms() about it")


def in_bounds(value, meta, key) -> None:
    for name, holds in (("gt", operator.gt), ("ge", operator.ge), ("lt", operator.lt), ("le", operator.le)):
        if name in meta:
            assert holds(value, meta[name]), (key, value, name, meta[name])


def conforming_config(config: Config) -> None:
    conforms(config, Config, {}, "config")
    for name, section in config.sections.items():
        conforms(section, type(section), {}, name)
    for i, spec in enumerate(config.callbacks):
        if spec.config is not None:
            conforms(spec.config, type(spec.config), {}, f"callbacks[{i}]")


def outcome(load_it, names: tuple[str, ...] | None) -> Config | str:
    """Config, or the UsageError's message after checking its shape (and that it names one of `names`); anything
    else fails the test."""
    try:
        config = load_it()
    except UsageError as e:
        message = str(e)
        assert message, "an empty error message"
        assert len(message.splitlines()) <= 3, message[:2000]
        assert len(message) <= MAX_MESSAGE_CHARS, message[:2000]
        assert names is None or any(n in message for n in names), (names, message[:2000])
        return message
    conforming_config(config)
    return config


def override(key: Key, text: str):
    item = f"{key.path}={text}"

    def load_it():
        raw = copy.deepcopy(BASE[key.recipe])  # = load_file(RECIPES / f"{key.recipe}.yaml"), which is fuzzed below
        apply_overrides(raw, [item])
        return from_dict(raw, base_dir=RECIPES)

    return outcome(load_it, (key.path,))


# ------------------------------------------------------------------------------------------ values


def as_yaml(value) -> str:
    """One-line YAML for an override (flow style, never wrapped)."""
    text = yaml.dump(value, Dumper=DUMPER, default_flow_style=True, width=10**9, allow_unicode=True)
    return text.removesuffix("\n...\n").removesuffix("\n")


NASTY_TEXT = st.sampled_from(["", " ", "\0", "a\0b", "a\nb", "\r\n", "null", "~", "true", "yes", "1e5", "0x10",
                              ".inf", "-.inf", ".nan", "2024-01-01", "x" * 5000, "é" * 300, "\u2028", "-", "[", "{"])
BIG_INTS = st.sampled_from([2**31, 2**32 - 1, 2**32, 2**53 + 1, INT_MAX, INT_MAX + 1, 2**64, 2**70, -(2**63),
                            -(2**70), 10**100, 10**14, -1, 0, 1])
NUMBERS = st.floats() | st.integers() | BIG_INTS | st.sampled_from([0.0, -0.0, 1e-320, 1e308, 0.999999, 1.0, 2.0])
SCALARS = st.none() | st.booleans() | NUMBERS | st.text(max_size=20) | NASTY_TEXT
NESTED = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8) | st.integers(0, 3), inner,
                                                                max_size=4),
    max_leaves=16,
)
BIG = st.integers(100, 300).map(lambda n: list(range(n)))  # one draw, not hundreds; rare: YAML parsing is slow
HOSTILE = st.one_of(*[NESTED] * 9, BIG)


def valid(tp: Any, meta) -> st.SearchStrategy:
    """Values of the declared type inside the declared bounds (what the loader must accept)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return st.one_of([st.none() if a is NONE else valid(a, meta) for a in args])
    if origin is Literal:
        return st.sampled_from(args)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.metadata.get("key", f.name): valid(hints[f.name], f.metadata) for f in dataclasses.fields(tp)}
        return st.fixed_dictionaries({}, optional=fields)
    if tp is bool:
        return st.booleans()
    if tp in (int, float):
        low = meta.get("ge", meta.get("gt", -INT_MAX if tp is int else -1e300))
        high = meta.get("le", meta.get("lt", INT_MAX if tp is int else 1e300))
        if tp is int:
            return st.integers(int(low) + ("gt" in meta), int(high) - ("lt" in meta))
        return st.floats(low, high, exclude_min="gt" in meta, exclude_max="lt" in meta, allow_nan=False)
    if tp is str:
        return st.text(string.printable, min_size=1, max_size=30).filter(lambda s: s.strip())
    if origin is list:
        n = meta.get("len")
        return st.lists(valid(args[0], {k: v for k, v in meta.items() if k != "len"}),
                        min_size=n or 0, max_size=n or 4)
    if origin is dict or tp is dict:
        return st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=8), st.integers(0, 9), max_size=3)
    return SCALARS


def loosely_typed(tp) -> bool:
    """Typed Any somewhere (e.g. `callbacks: list[Any]`): checked by code the schema does not describe, so the
    fuzzer cannot know which values are valid, only that every value gets a run or one clean error."""
    return tp is Any or any(loosely_typed(a) for a in typing.get_args(tp))


def key_values(key: Key) -> st.SearchStrategy:
    if key.path == "recipe":  # another recipe does not take this recipe's sections: only hostile names
        return st.tuples(st.just(False), HOSTILE | st.sampled_from(["nope", "os:path", ":X", "a/b.py:C", "....:X"]))
    if loosely_typed(key.tp) and not (typing.get_origin(key.tp) is dict):
        return st.tuples(st.just(False), HOSTILE)
    bounds = [v for k, v in key.meta.items() if k in ("gt", "ge", "lt", "le")]
    edges = st.sampled_from([b + d for b in bounds for d in (-1, -1e-9, 0, 1e-9, 1)]) if bounds else st.nothing()
    return st.tuples(st.just(True), valid(key.tp, key.meta)) | st.tuples(st.just(False), HOSTILE | edges)


def expected(value, tp):
    """What a valid value becomes once typed (ints given for float keys become floats)."""
    if tp is float or (typing.get_origin(tp) in (Union, types.UnionType) and float in typing.get_args(tp)):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return value


def typed_value(config: Config, path: str):
    section, *rest = path.split(".")
    obj = config.sections[section] if section in config.sections else getattr(config, section)
    for part in rest:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, "async_save" if part == "async" else part)
    return obj


# ------------------------------------------------------------------------------------------ the properties


@pytest.mark.parametrize("key", KEYS, ids=str)
@fuzz(20)
@given(data=st.data())
def test_any_value_of_any_key(key: Key, data):
    must_accept, value = data.draw(key_values(key))
    result = override(key, as_yaml(value))
    if must_accept:
        assert isinstance(result, Config), f"{key.path}={as_yaml(value)} refused: {result}"
        if not any(dataclasses.is_dataclass(t) for t in (key.tp, *typing.get_args(key.tp))):
            got = typed_value(result, key.path)
            assert got == expected(value, key.tp) or (got != got and value != value), (key.path, value, got)


@pytest.mark.parametrize("name, key", CALLBACK_KEYS, ids=lambda x: getattr(x, "path", x))
@fuzz(20)
@given(data=st.data())
def test_any_value_of_any_callback_key(name, key: Key, data):
    must_accept, value = data.draw(key_values(key))
    raw = copy.deepcopy(BASE["mlp_regression"])
    raw["callbacks"] = [{"name": name, key.path: value}]
    result = outcome(lambda: from_dict(raw, base_dir=RECIPES), (f"callbacks[0].{key.path}", "callbacks[0]"))
    if must_accept:
        assert isinstance(result, Config), f"{name}: {key.path}={value!r} refused: {result}"


DEEP = st.integers(MAX_DEPTH - 2, 600).map(lambda n: "[" * n + "]" * n)
BOMB = st.integers(3, 9).map(
    lambda n: "[" + ", ".join(["&a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
                              + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, n)]) + "]"
)
RAW_TEXT = st.text(max_size=60) | DEEP | BOMB | st.sampled_from(
    ["&a [*a]", "{a: 1, a: 2}", "!!python/object:os.system x", "!!binary Zm9v", "9" * 5000, "[1, 2", "'a", "*x"])


@pytest.mark.parametrize("key", [k for k in KEYS if k.path.count(".") <= 1][::3], ids=str)
@fuzz(10)
@given(text=RAW_TEXT)
def test_any_text_as_an_override_value(key: Key, text):
    override(key, text)


KEY_TEXT = st.text(max_size=30) | st.sampled_from(["tra\nin.max_steps", "train..x", ".", "a" * 500, "train.max_steps.x",
                                                    "\0", "seed\r", "train. max_steps", "train.early_stopping.x"])


@fuzz(300)
@given(key=KEY_TEXT, value=SCALARS)
def test_any_key(key, value):
    item = f"{key}={as_yaml(value)}"

    def load_it():
        raw = copy.deepcopy(BASE["mlp_regression"])
        apply_overrides(raw, [item])
        return from_dict(raw, base_dir=RECIPES)

    first = key.split("=")[0].split(".")[0].strip()
    outcome(load_it, ("override", first) if first and first.isprintable() else ("override", "'"))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "c.yaml"


@functools.lru_cache(maxsize=None)
def without(recipe: str, section: str) -> str:
    raw = BASE[recipe]
    return yaml.dump({k: v for k, v in raw.items() if k != section}, Dumper=DUMPER, sort_keys=False).rstrip("\n")


def document(recipe: str, key: Key, value_text: str) -> str:
    """The recipe's bundled config as YAML text with `key` set to the YAML text `value_text` (block style)."""
    parts = key.path.split(".")
    lines = [without(recipe, parts[0])]
    indent = ""
    for part in parts[:-1]:
        lines.append(f"{indent}{part}:")
        indent += "  "
    lines.append(f"{indent}{parts[-1]}: {value_text}")
    return "\n".join(lines) + "\n"


LINE_BREAKS = "\n\r\x85\u2028\u2029"  # YAML 1.1's


@fuzz(250)
@given(key=st.sampled_from(KEYS), value=NESTED, raw=RAW_TEXT, use_raw=st.booleans())
def test_any_value_in_a_config_file(config_file, key: Key, value, raw, use_raw):
    raw = "".join(c for c in raw if c not in LINE_BREAKS)  # the value stays on its key's line
    config_file.write_text(document(key.recipe, key, raw if use_raw else as_yaml(value)), encoding="utf-8")
    outcome(lambda: load(config_file), (key.path, str(config_file)))


@fuzz(300)
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_content(config_file, content):
    config_file.write_bytes(content)
    outcome(lambda: load(config_file), None)  # any key may be the one at fault: only the shape is checked


@fuzz(200)
@given(items=st.lists(st.tuples(st.sampled_from([k for k in KEYS if k.recipe == "mlp_regression"]), NESTED),
                      min_size=2, max_size=5))
def test_several_overrides_at_once(items):
    overrides = [f"{key.path}={as_yaml(value)}" for key, value in items]

    def load_it():
        raw = copy.deepcopy(BASE["mlp_regression"])
        apply_overrides(raw, overrides)
        return from_dict(raw, base_dir=RECIPES)

    outcome(load_it, tuple(key.path.split(".")[0] for key, _ in items))


@fuzz(200)
@given(raw=st.dictionaries(st.sampled_from([*{k.path.split(".")[0] for k in KEYS}, "x"]), NESTED, max_size=6))
def test_from_dict_of_any_mapping(raw):
    """What `dist-train export` and the Python API hand to from_dict (no YAML in between)."""
    outcome(lambda: from_dict({"recipe": "mlp_regression", **raw}), tuple(raw) or ("recipe",))
