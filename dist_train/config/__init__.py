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

from dist_train.config.schema import Config, SlurmConfig
from dist_train.config.typed import build, to_dict
from dist_train.config.yaml_loader import MAX_FILE_BYTES, YamlRefused, check_plain, parse, unshared
from dist_train.errors import SHOWN_CHARS, UsageError, closest, key_text, one_line, one_of, shown

__all__ = ["Config", "load", "load_file", "apply_overrides", "to_yaml", "to_dict", "warnings_for"]


def load(path: str | os.PathLike, overrides: list[str] = ()) -> Config:
    raw = load_file(path)
    apply_overrides(raw, overrides)
    return from_dict(raw, base_dir=Path(path).resolve().parent)


def slurm_section(path: str | os.PathLike, overrides: list[str] = ()) -> SlurmConfig:
    """Only the `slurm:` section, checked: what a batch script needs before any process starts (no recipe import)."""
    raw = load_file(path)
    apply_overrides(raw, overrides)
    return build(SlurmConfig, raw.get("slurm"), "slurm")


def load_file(path: str | os.PathLike) -> dict:
    name = key_text(str(path), SHOWN_CHARS)
    p = Path(path)
    hint = "give the path of a YAML file, e.g. recipes/fashion_mnist_mlp.yaml"
    try:
        if "\0" in str(path) or not p.is_file():
            raise UsageError(f"config file '{name}' not found ({hint})")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise UsageError(f"{name}: {p.stat().st_size:,} bytes is too large for a config file "
                             f"(at most {MAX_FILE_BYTES:,}; {hint})")
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise UsageError(f"config file '{name}': cannot read it: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not a UTF-8 text file") from None
    try:
        data = parse(text)
    except YamlRefused as e:
        raise UsageError(f"{name} {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{name}{where}: malformed YAML: {one_line(e.problem or e.context)}") from None
    except (yaml.YAMLError, ValueError, OverflowError) as e:  # ValueError: e.g. an integer of > 4300 digits
        raise UsageError(f"{name}: malformed YAML: {one_line(e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{name}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return unshared(data)


def apply_overrides(raw: dict, overrides) -> None:
    """Apply `a.b.c=value` overrides in place; values are parsed as YAML (`null`, `true`, `[1, 2]`, `1.0e-3`);
    text that is not valid YAML is taken as a string."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        where = f"override {shown(item)}"
        if not sep or not key or any(not part.strip() for part in key.split(".")):
            raise UsageError(f"{where}: expected key=value with a dotted key, e.g. train.max_steps=50")
        if not key.isprintable() or len(key) > 200:
            raise UsageError(f"{where}: the key {shown(key, 100)} is not a config key (dotted names such as "
                             "train.max_steps, no newlines or control characters)")
        try:
            value = unshared(parse(text)) if text.strip() else None
        except YamlRefused as e:
            raise UsageError(f"{where}: {e}") from None
        except (yaml.YAMLError, ValueError, OverflowError):
            value = text
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:  # absent, or `null` in the file (e.g. tracking.wandb): the override creates it
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UsageError(f"{where}: {'.'.join(parts[: i + 1])} is not a section (it is {shown(child)})")
            node = child
        node[parts[-1]] = value


def from_dict(raw: dict, base_dir: Path | None = None) -> Config:
    """A checked Config. The core keys are checked first, before anything imports torch, so a mistake in them is
    reported in a fraction of a second; then the recipe (and any callback named by a file) is imported, which types
    its own sections."""
    from dist_train.callbacks import callback_specs
    from dist_train.recipe import canonical_name, resolve_recipe

    if not isinstance(raw, dict):
        raise UsageError(f"config: expected a mapping of config keys, got {shown(raw)}")
    check_plain(raw)
    raw = dict(raw)
    core_keys = [f.name for f in dataclasses.fields(Config) if f.name not in ("sections", "callbacks")]
    recipe_name = raw.get("recipe", Config.recipe)
    if not isinstance(recipe_name, str) or not recipe_name.strip() or not recipe_name.isprintable():
        raise UsageError(f"recipe: expected a recipe name or path/to/file.py:ClassName, got {shown(recipe_name)}")
    callbacks = raw.pop("callbacks", None)
    config = build(Config, {k: v for k, v in raw.items() if k in core_keys}, "")

    recipe_cls = resolve_recipe(recipe_name, base_dir)
    section_types = dict(recipe_cls.sections)
    sections = {name: build(cls, raw.pop(name, None), name) for name, cls in section_types.items()}
    for name in raw:
        if name not in core_keys:
            valid = core_keys + ["callbacks"] + list(section_types)
            raise UsageError(f"{key_text(name)}: unknown key{closest(name, valid)}; valid top-level keys: "
                             f"{one_of(valid)}")
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
