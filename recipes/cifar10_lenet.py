"""LeNet-5 on CIFAR-10: conv5-pool-conv5-pool-120-84-10 (ReLU, max-pool), read by torchvision's CIFAR10 class.

The literature's figure for this network on CIFAR-10 is ~60-65% test accuracy; it is not measured here, because
no copy of CIFAR-10 is reachable on the machines this project runs on (`dist-train data fetch cifar10 --download`
gets it where there is internet).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import nn

from dist_train.data import InMemoryDataset
from dist_train.datasets import cifar10
from dist_train.metrics import F1, Accuracy, Precision, Recall, RocAuc
from dist_train.recipe import Recipe


@dataclass
class ModelConfig:
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})


def lenet(cfg: ModelConfig) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),   # 32 -> 28 -> 14
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 10 -> 5
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Dropout(cfg.dropout),
        nn.Linear(120, 84), nn.ReLU(), nn.Dropout(cfg.dropout),
        nn.Linear(84, 10),
    )


class Cifar10LeNet(Recipe):
    sections = {"model": ModelConfig}

    def build_model(self) -> nn.Module:
        return lenet(self.config.section("model"))

    def build_datasets(self):
        root = self.config.data.root or "data"
        return InMemoryDataset(*cifar10.load(root, train=True)), InMemoryDataset(*cifar10.load(root, train=False))

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs, batch[1])

    def metrics(self):
        return {"accuracy": Accuracy(), "precision": Precision(10), "recall": Recall(10), "f1": F1(10),
                "roc_auc": RocAuc(10)}
