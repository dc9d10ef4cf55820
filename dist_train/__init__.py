"""dist_train: one training loop from a CPU process to a multi-node GPU cluster.

Importing the package is cheap on purpose (no torch here): `dist-train --help` must answer in well under a second.

The bundled recipes live in the repository's top-level recipes/ folder and are the package `dist_train.recipes`
(never a top-level `recipes`, which would shadow a user's own). A wheel installs that folder as dist_train/recipes
(setup.py); an editable install maps it there; in a source checkout on PYTHONPATH the finder below does the same.
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.2.0"

_HERE = Path(__file__).resolve().parent
_CHECKOUT_RECIPES = _HERE.parent / "recipes"


class _CheckoutRecipes(importlib.abc.MetaPathFinder):
    """`dist_train.recipes` -> the checkout's recipes/ folder, whichever dist_train checkout was imported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "dist_train.recipes":
            return None
        return importlib.util.spec_from_file_location(
            fullname, _CHECKOUT_RECIPES / "__init__.py", submodule_search_locations=[str(_CHECKOUT_RECIPES)])


# Installed (wheel) dist_train has its own recipes/ subfolder; only a checkout needs the finder. It goes first so that
# a shared editable install of another checkout never answers for this one.
if not (_HERE / "recipes").is_dir() and (_CHECKOUT_RECIPES / "__init__.py").is_file():
    sys.meta_path.insert(0, _CheckoutRecipes())
