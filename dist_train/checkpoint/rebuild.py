"""The config to rebuild a checkpoint's model with, for commands that read a checkpoint outside training
(`dist-train evaluate`, `dist-train export`).

The manifest's config is data from the checkpoint, which may come from anyone: it is never allowed to make
dist_train import code. A bundled recipe (a bare name such as `fashion_mnist_mlp`) is taken as named; a recipe the
manifest names by file or module (`path/to/x.py:Class`, `pkg.mod:Class`) must be given on the command line
(`--recipe`), which is the user vouching for it; callbacks listed in the manifest are dropped.
"""

from __future__ import annotations

import copy
from pathlib import Path

from dist_train.checkpoint.manifest import Manifest
from dist_train.errors import UsageError


def config_from_checkpoint(manifest: Manifest, overrides: list[str], recipe: str | None, command: str):
    from dist_train.config import apply_overrides, from_dict

    raw = copy.deepcopy(manifest.config) if isinstance(manifest.config, dict) else {}
    raw.pop("callbacks", None)  # a checkpoint must not name code to import; evaluation runs no callbacks
    named = raw.get("recipe")
    if recipe:
        if recipe != named:
            print(f"{command}: using --recipe {recipe} (the checkpoint names {str(named)[:120]!r})", flush=True)
        raw["recipe"] = recipe
    elif not isinstance(named, str) or ":" in named or "/" in named:
        raise UsageError(f"{command}: the checkpoint names its recipe as {str(named)[:120]!r}, code outside the "
                         "bundled recipes; dist-train never imports code that a checkpoint names: give it with "
                         "--recipe PATH.py:Class (or module:Class) if you trust it")
    apply_overrides(raw, overrides)
    return from_dict(raw)


def chosen_weights(strategy_cls, directory: Path, choice: str, command: str) -> str:
    """"model" or "ema" for --weights auto|model|ema: auto takes the EMA when the checkpoint has one."""
    has_ema = strategy_cls.has_ema(directory)
    if choice == "ema" and not has_ema:
        raise UsageError(f"{command} --weights ema: the checkpoint {directory} has no EMA weights (train.ema was off)")
    return "ema" if choice == "ema" or (choice == "auto" and has_ema) else "model"
