"""The bundled recipes are `dist_train.recipes`, never a top-level `recipes` package: in a non-editable wheel (built
here, unpacked as pip would install it) and in a source checkout on PYTHONPATH, a user's own `recipes` package is
the one `import recipes` finds, and both the bundled recipes and the user's resolve."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from support import REPO

# Run in a directory outside the repository, with only the given PYTHONPATH: which `recipes` wins, and from where
# each recipe comes.
PROBE = """
import importlib.util, sys
import recipes
from dist_train.recipe import builtin_recipes, resolve_recipe
print(recipes.__file__)
print(importlib.util.find_spec("dist_train.recipes.mlp_regression").origin)
print(",".join(builtin_recipes()))
print(resolve_recipe("recipes.mine:Mine").__module__)
"""


def probe(cwd: Path, *path: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(map(str, path))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def users_recipes(root: Path) -> Path:
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "__init__.py").write_text("")
    (root / "recipes" / "mine.py").write_text("from dist_train.recipe import Recipe\n\n\nclass Mine(Recipe):\n"
                                              "    pass\n")
    return root


def test_wheel_and_checkout_keep_a_users_recipes_package(tmp_path):
    src = tmp_path / "src"  # setuptools builds in the source tree: build from a copy, not the checkout
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("dist_train", "recipes"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "wheel").glob("dist_train-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("recipes/")]
    assert {"dist_train/recipes/__init__.py", "dist_train/recipes/mlp_regression.py",
            "dist_train/recipes/mlp_regression.yaml"} <= set(names)
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "dist_train").rglob("*.py")}
    assert sources <= set(names)  # every module of the package made it into the wheel
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip does with a pure-Python wheel
    user = users_recipes(tmp_path / "user")

    installed = probe(tmp_path, user, site)
    assert installed[0] == str(user / "recipes" / "__init__.py")
    assert installed[1] == str(site / "dist_train" / "recipes" / "mlp_regression.py")
    assert "mlp_regression" in installed[2].split(",") and installed[3] == "recipes.mine"

    checkout = probe(tmp_path, user, REPO)
    assert checkout[0] == str(user / "recipes" / "__init__.py")
    assert checkout[1] == str(REPO / "recipes" / "mlp_regression.py")
    assert checkout[2] == installed[2] and checkout[3] == "recipes.mine"
