"""The recipe batch contract (Recipe.inputs / targets / batch_size): a recipe whose batches are dicts, the Hugging
Face convention, trains on 1 and 2 processes alike, evaluates with metrics, is evaluated from its checkpoint and
exports."""

from __future__ import annotations

import torch

from support import RECIPES, read_metrics, run_cli, run_torchrun, train_losses

DICT_RECIPE = '''
import torch
import torch.nn.functional as F
from torch import nn
from dist_train.metrics import MeanSquaredError
from dist_train.recipes.mlp_regression import MLPRegression, generate


class DictRows:
    """A map-style dataset of dict samples: {"features": [16], "mask": [16], "labels": [1]}."""
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return {"features": self.x[i], "mask": torch.ones_like(self.x[i]), "labels": self.y[i]}


class KeywordModel(nn.Module):
    def __init__(self, d_in, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    def forward(self, features, mask):
        return self.net(features * mask)


class DictBatches(MLPRegression):
    def build_model(self):
        return KeywordModel(self.config.section("dataset").in_features, self.config.section("model").hidden)
    def build_datasets(self):
        d = self.config.section("dataset")
        return DictRows(*generate(d, d.n_train, 0)), DictRows(*generate(d, d.n_eval, 1))
    def loss(self, outputs, batch):
        return F.mse_loss(outputs, batch["labels"])
'''

ARGS = ["dataset.n_train=128", "dataset.n_eval=40", "model.hidden=8", "train.batch_size=8", "train.log_every=1",
        "train.eval_every=6", "train.max_steps=6", "scheduler.warmup_steps=0", "optimizer.lr=0.01"]


def test_dict_batches_train_on_any_world_size_evaluate_and_export(tmp_path):
    (tmp_path / "dict_recipe.py").write_text(DICT_RECIPE)
    recipe = f"recipe={tmp_path / 'dict_recipe.py'}:DictBatches"
    one = tmp_path / "one"
    run_cli("train", RECIPES / "mlp_regression.yaml", recipe, f"run_dir={one}", *ARGS, "train.grad_accum=2")
    evals = [r for r in read_metrics(one) if "eval/mse" in r]
    assert len(evals) == 1 and abs(evals[0]["eval/mse"] - evals[0]["eval/loss"]) <= 1e-6 * evals[0]["eval/mse"]
    # the same samples in the same order on 2 processes x accum 1: dict batches go through the same data path
    two = tmp_path / "two"
    run_torchrun(2, "train", RECIPES / "mlp_regression.yaml", recipe, f"run_dir={two}", *ARGS)
    a, b = train_losses(one), train_losses(two)
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-5 * abs(a[k]) for k in a)

    step = one / "checkpoints" / "step_6"
    refused = run_cli("evaluate", step, check=False)
    assert refused.returncode == 2 and "never imports code that a checkpoint names" in refused.stderr
    out = run_cli("evaluate", step, "--recipe", f"{tmp_path / 'dict_recipe.py'}:DictBatches", "--json").stdout
    import json

    values = json.loads(out.strip().splitlines()[-1])
    assert abs(values["mse"] - evals[0]["eval/mse"]) <= 1e-6 * evals[0]["eval/mse"]

    exported = tmp_path / "model.pt"
    run_cli("export", step, "--format", "torchscript", "--out", exported, "--recipe",
            f"{tmp_path / 'dict_recipe.py'}:DictBatches")
    scripted = torch.jit.load(str(exported))
    x = torch.randn(3, 16)
    assert scripted(features=x, mask=torch.ones_like(x)).shape == (3, 1)
