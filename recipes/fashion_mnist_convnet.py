"""The 3-conv ConvNet on Fashion-MNIST: 3 x (conv3x3-ReLU-maxpool) + dropout + linear, with augmentation.

`ConvBlock` is the recipe's own nn.Module block (the "custom layer" of the tutorials). Augmentation (random flip,
small rotation, from the `augment:` section) runs in `forward` on the batch already on the device, and only in
training: the in-memory dataset stays a pure tensor gather, and eval sees the plain test images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import nn

from dist_train.augment import AugmentConfig, BatchAugment
from dist_train.config.schema import positive
from dist_train.datasets import fashion_mnist
from dist_train.metrics import F1, Accuracy
from dist_train.recipe import Recipe


@dataclass
class ModelConfig:
    channels: list[int] = field(default_factory=lambda: [32, 32, 64])
    dropout: float = field(default=0.1, metadata={"ge": 0, "lt": 1})
    num_classes: int = positive(10)


class ConvBlock(nn.Module):
    """conv3x3 (same padding) -> ReLU -> 2x2 max-pool: halves the resolution, sets the width."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x):
        return F.max_pool2d(F.relu(self.conv(x)), 2)


class ConvNet(nn.Module):
    def __init__(self, cfg: ModelConfig, in_channels: int = 1, size: int = 28):
        super().__init__()
        widths = [in_channels, *cfg.channels]
        self.blocks = nn.Sequential(*(ConvBlock(a, b) for a, b in zip(widths, widths[1:], strict=False)))
        for _ in cfg.channels:
            size //= 2
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(widths[-1] * size * size, cfg.num_classes)

    def forward(self, x):
        return self.head(self.dropout(self.blocks(x).flatten(1)))


class FashionMnistConvNet(Recipe):
    sections = {"model": ModelConfig, "augment": AugmentConfig}

    def __init__(self, config):
        super().__init__(config)
        self.augment = None  # built on first use: config loading must not import torchvision

    def build_model(self) -> nn.Module:
        return ConvNet(self.config.section("model"))

    def build_datasets(self):
        root = self.config.data.root or "data"
        return fashion_mnist.train_and_test(root)

    def forward(self, model, batch):
        images = batch[0]
        if model.training:
            if self.augment is None:
                self.augment = BatchAugment(self.config.section("augment"))
            images = self.augment(images)
        return model(images)

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs, batch[1])

    def metrics(self):
        n = self.config.section("model").num_classes
        return {"accuracy": Accuracy(), "f1": F1(n)}
