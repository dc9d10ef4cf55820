"""A checkpoint opened in one process outside training (`dist-train export`, `dist-train evaluate`): verified,
its model rebuilt and its weights loaded, without importing any code the checkpoint names by itself.

The manifest's config names the recipe that trained the model. A registered recipe (a module of the installed
`recipes` package) is code the user installed, and is used. Anything else (`path/to/file.py:Class`, possibly a
file shipped inside the checkpoint folder, or `some.module:Class`) would be code chosen by whoever made the
checkpoint: it is imported only when the user names it with `--recipe`, and the command says which one it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dist_train.checkpoint.integrity import verify
from dist_train.checkpoint.manifest import InvalidCheckpoint, Manifest
from dist_train.checkpoint.storage import is_url, open_storage
from dist_train.errors import UsageError


@dataclass
class OpenCheckpoint:
    manifest: Manifest
    config: Any  # dist_train.config.Config, rebuilt from the manifest with the trusted recipe
    recipe: Any  # the Recipe instance
    model: Any  # the unwrapped model with the checkpoint's weights, in eval mode


def open_checkpoint(location: str, recipe: str | None, command: str) -> OpenCheckpoint:
    """`command` ("export", "evaluate") prefixes every error line."""
    where = location.rstrip("/") if is_url(location) else location
    storage = open_storage(where, key=command)
    if not is_url(where):
        from pathlib import Path

        where = Path(where)
        if not where.is_dir():
            raise UsageError(f"{command}: checkpoint '{where}' is not a folder; give run_dir/checkpoints/step_<N>")
    try:
        manifest = verify(where, storage)
    except InvalidCheckpoint as e:
        raise UsageError(f"{command}: '{where}' is not a usable checkpoint: {e}") from None
    chosen = trusted_recipe(manifest.recipe, recipe, command)

    from dist_train.config import from_dict
    from dist_train.recipe import resolve_recipe
    from dist_train.strategies import strategy_class

    raw = dict(manifest.config)
    raw["recipe"] = chosen
    raw.pop("callbacks", None)  # callbacks can name code too, and export/evaluate run none
    config = from_dict(raw)
    recipe_obj = resolve_recipe(config.recipe)(config)
    model = recipe_obj.build_model()
    try:
        strategy_class(manifest.strategy).load_consolidated(where, model)
    except InvalidCheckpoint as e:
        raise UsageError(f"{command}: '{where}' cannot be loaded: {e}") from None
    model.eval()
    return OpenCheckpoint(manifest, config, recipe_obj, model)


def trusted_recipe(named: str, given: str | None, command: str) -> str:
    """The recipe to import: `given` (--recipe) if any, else the manifest's if it is a registered recipe."""
    from dist_train.recipe import builtin_recipes

    if given:
        if given != named:
            print(f"{command}: using --recipe {given} (the checkpoint names {_short(named)})", flush=True)
        return given
    if ":" in named or named not in builtin_recipes():
        raise UsageError(
            f"{command}: the checkpoint names the recipe {_short(named)}, which is not a registered recipe; "
            f"{command} never imports code a checkpoint names: pass --recipe with that reference if you trust it, "
            "or with the name of an installed recipe"
        )
    return named


def _short(text: str, limit: int = 120) -> str:
    text = repr(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 4] + "...'"
