"""What pyproject.toml cannot say: the repository's top-level recipes/ folder is installed as `dist_train.recipes`,
never as a top-level `recipes` package (that would shadow a user's own `recipes`)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["dist_train", "dist_train.*"]) + ["dist_train.recipes"],
    package_dir={"dist_train.recipes": "recipes"},
)
