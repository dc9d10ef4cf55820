"""The classic MLP regression: y = f(Wx + b) + noise on generated data, a Linear-ReLU-Linear model, MSE.

The data is a pure function of `dataset.seed`: every rank (and every world size) builds the same tensors, so no
file is needed and runs are comparable across launches. The noise floor (the best achievable MSE) is noise^2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dist_train.config.schema import positive
from dist_train.data import InMemoryDataset
from dist_train.metrics import MeanSquaredError
from dist_train.recipe import Recipe


@dataclass
class DatasetConfig:
    seed: int = 1234
    n_train: int = positive(8192)
    n_eval: int = positive(1024)
    in_features: int = positive(16)
    out_features: int = positive(1)
    noise: float = field(default=0.1, metadata={"ge": 0})


@dataclass
class ModelConfig:
    hidden: int = positive(64)


def generate(cfg: DatasetConfig, n: int, offset: int):
    g = torch.Generator().manual_seed(cfg.seed)
    w = torch.randn(cfg.in_features, cfg.out_features, generator=g) / cfg.in_features ** 0.5
    b = torch.randn(cfg.out_features, generator=g)
    g.manual_seed(cfg.seed + 1 + offset)
    x = torch.randn(n, cfg.in_features, generator=g)
    y = torch.sin(x @ w + b) * 2.0 + cfg.noise * torch.randn(n, cfg.out_features, generator=g)
    return x, y


class MLPRegression(Recipe):
    sections = {"dataset": DatasetConfig, "model": ModelConfig}

    def build_model(self) -> nn.Module:
        d, m = self.config.section("dataset"), self.config.section("model")
        return nn.Sequential(nn.Linear(d.in_features, m.hidden), nn.ReLU(), nn.Linear(m.hidden, d.out_features))

    def build_datasets(self):
        d = self.config.section("dataset")
        return InMemoryDataset(*generate(d, d.n_train, 0)), InMemoryDataset(*generate(d, d.n_eval, 1))

    def loss(self, outputs, batch):
        return F.mse_loss(outputs, batch[1])

    def metrics(self):
        return {"mse": MeanSquaredError()}
