"""The classic MNIST MLP (784-128-64-10, ReLU, cross-entropy) on Fashion-MNIST, read by torchvision's dataset class."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import nn

from dist_train.datasets import fashion_mnist
from dist_train.metrics import Accuracy
from dist_train.recipe import Recipe


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = field(default=0.0, metadata={"ge": 0})


class FashionMnistMLP(Recipe):
    sections = {"model": ModelConfig}

    def build_model(self) -> nn.Module:
        cfg = self.config.section("model")
        layers, width = [nn.Flatten()], 28 * 28
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = h
        layers.append(nn.Linear(width, 10))
        return nn.Sequential(*layers)

    def build_datasets(self):
        root = self.config.data.root or "data"
        return fashion_mnist.train_and_test(root)

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs, batch[1])

    def metrics(self):
        return {"accuracy": Accuracy()}

    def flops_per_sample(self):
        widths = [28 * 28, *self.config.section("model").hidden, 10]
        # 2 FLOPs per multiply-add, x3 for forward + backward
        return 6.0 * sum(a * b for a, b in zip(widths, widths[1:], strict=False))
