"""Load a run's configuration: YAML file + `key=value` overrides -> typed `Config`.

Config flows one way: this module is the only place that reads YAML or overrides; the runner and every part it
builds receive typed dataclasses. The recipe is resolved here because it may declare its own sections (e.g.
`model:`), which are typed by the recipe's dataclasses and checked like the core ones.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from dist_train.config.schema import Config
from dist_train.config.typed import build, to_dict
from dist_train.errors import UsageError, closest, one_of

__all__ = ["Config", "load", "load_file", "apply_overrides", "to_yaml", "to_dict", "warnings_for"]


def load(path: str | os.PathLike, overrides: list[str] = ()) -> Config:
    raw = load_file(path)
    apply_overrides(raw, overrides)
    return from_dict(raw, base_dir=Path(path).resolve().parent)


def load_file(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file '{path}' not found (give the path of a YAML file, e.g. recipes/fashion_mnist_mlp.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}{where}: malformed YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: malformed YAML: {e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def apply_overrides(raw: dict, overrides) -> None:
    """Apply `a.b.c=value` overrides in place; values are parsed as YAML (`null`, `true`, `[1, 2]`, `1.0e-3`)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UsageError(f"override '{item}': expected key=value with a dotted key, e.g. train.max_steps=50")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"override '{item}': {'.'.join(parts[: i + 1])} is not a section (it is {child!r})")
            node = child
        node[parts[-1]] = value


def from_dict(raw: dict, base_dir: Path | None = None) -> Config:
    """A checked Config. The core keys are checked first, before anything imports torch, so a mistake in them is
    reported in a fraction of a second; then the recipe (and any callback named by a file) is imported, which types
    its own sections."""
    from dist_train.callbacks import callback_specs
    from dist_train.recipe import canonical_name, resolve_recipe

    raw = dict(raw)
    core_keys = [f.name for f in dataclasses.fields(Config) if f.name not in ("sections", "callbacks")]
    recipe_name = raw.get("recipe", Config.recipe)
    if not isinstance(recipe_name, str):
        raise UsageError(f"recipe: expected a recipe name or path/to/file.py:ClassName, got {recipe_name!r}")
    callbacks = raw.pop("callbacks", None)
    config = build(Config, {k: v for k, v in raw.items() if k in core_keys}, "")

    recipe_cls = resolve_recipe(recipe_name, base_dir)
    section_types = dict(recipe_cls.sections)
    sections = {name: build(cls, raw.pop(name, None), name) for name, cls in section_types.items()}
    for name in raw:
        if name not in core_keys:
            valid = core_keys + ["callbacks"] + list(section_types)
            raise UsageError(f"{name}: unknown key{closest(name, valid)}; valid top-level keys: {one_of(valid)}")
    config.recipe = canonical_name(recipe_name, base_dir)
    config.sections = sections
    config.callbacks = callback_specs(callbacks, base_dir)
    return config


def warnings_for(config: Config) -> list[str]:
    """Settings that are valid but probably not what the user meant: one line each, printed at start."""
    found = []
    sched, train = config.scheduler, config.train
    if sched.warmup_steps >= train.max_steps:
        found.append(f"scheduler.warmup_steps={sched.warmup_steps} >= train.max_steps={train.max_steps}: the "
                     f"learning rate never reaches optimizer.lr={config.optimizer.lr:g}; lower warmup_steps")
    return found


def to_yaml(config: Config) -> str:
    data = to_dict(config)
    data.update(data.pop("sections"))
    data["callbacks"] = [spec.to_dict() for spec in config.callbacks]
    return yaml.safe_dump(data, sort_keys=False)


def resolved_dict(config: Config) -> dict[str, Any]:
    return yaml.safe_load(to_yaml(config))
