"""Recipe mistakes are reported as recipe mistakes (dist_train/recipe_checks.py): one line naming the recipe
method and what was expected, exit 2, before a single optimizer step."""

from __future__ import annotations

import pytest
import torch

from dist_train.cluster import DistEnv
from dist_train.config import load
from dist_train.errors import UsageError
from dist_train.runner import Trainer
from support import RECIPES, run_cli

BROKEN = '''
import torch
from torch import nn
from dist_train.data import InMemoryDataset
from dist_train.recipes.mlp_regression import MLPRegression


class NoModel(MLPRegression):
    def build_model(self):
        nn.Linear(3, 1)  # forgot to return it


class VectorLoss(MLPRegression):
    def loss(self, outputs, batch):
        return (outputs - batch[1]) ** 2  # no .mean()


class DetachedLoss(MLPRegression):
    def loss(self, outputs, batch):
        return ((outputs - batch[1]) ** 2).mean().detach()


class Unequal(MLPRegression):
    def build_datasets(self):
        return InMemoryDataset(torch.zeros(100, 16), torch.zeros(99, 1)), None


class WrongWidth(MLPRegression):
    """No eval set, so the first training batch is where the mismatch shows."""
    def build_model(self):
        return nn.Sequential(nn.Linear(17, 8), nn.ReLU(), nn.Linear(8, 1))

    def build_datasets(self):
        return super().build_datasets()[0], None


class EvalOnlyBreaks(MLPRegression):
    """Trains fine; its eval set has another width, so eval would fail after train.eval_every steps."""
    def build_datasets(self):
        train, _ = super().build_datasets()
        return train, InMemoryDataset(torch.zeros(40, 15), torch.zeros(40, 1))
'''


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    path = tmp_path_factory.mktemp("broken") / "broken.py"
    path.write_text(BROKEN)
    return path


def fit(broken, tmp_path, name, *extra):
    config = load(RECIPES / "mlp_regression.yaml", [f"recipe={broken}:{name}", f"run_dir={tmp_path / 'run'}",
                                                    "dataset.n_train=256", "dataset.n_eval=64", "train.max_steps=3",
                                                    "train.batch_size=16", *extra])
    Trainer(config, DistEnv.single(), torch.device("cpu")).fit()


@pytest.mark.parametrize("name, expected", [
    ("NoModel", r"build_model\(\) returned NoneType; it must return a torch.nn.Module"),
    ("VectorLoss", r"loss\(\) returned tensor \[16, 1\] float32; it must return a scalar floating-point tensor"),
    ("DetachedLoss", r"loss\(\) returned a tensor that does not require grad"),
    ("Unequal", r"build_datasets\(\) failed: ValueError: InMemoryDataset needs tensors of equal length along dim 0, "
                r"got lengths \[100, 99\]"),
    ("WrongWidth", r"forward\(\) failed on the first training batch \(tuple of 2: tensor \[16, 16\] float32, tensor "
                   r"\[16, 1\] float32\): RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    ("EvalOnlyBreaks", r"forward/loss failed on an eval batch \(tuple of 2: tensor \[2, 15\] float32"),
])
def test_each_mistake_names_the_recipe_method(broken, tmp_path, name, expected):
    with pytest.raises(UsageError, match=rf"^recipe {broken}:{name}: {expected}"):
        fit(broken, tmp_path, name)
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or not (tmp_path / "run" / "metrics.jsonl").read_text()


def test_a_build_failure_names_the_recipe_and_its_sections_in_one_line(tmp_path):
    result = run_cli("train", RECIPES / "mlp_regression.yaml", "model.hidden=100000000000000",
                     f"run_dir={tmp_path}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dist-train: error: recipe mlp_regression: build_model() failed: RuntimeError")
    assert "(its sections: dataset: {" in lines[0] and "model: {'hidden': 100000000000000}" in lines[0]
