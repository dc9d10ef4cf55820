"""Eval metrics that stay exact across ranks.

Each metric accumulates *sufficient statistics* (sums and counts) as a float64 tensor; the runner all-reduces the
sums across ranks and only then computes the ratio. Averaging per-rank ratios would be wrong whenever ranks see
different numbers of samples.
"""

from __future__ import annotations

import torch


class Metric:
    """Subclass: set `self.stats` in __init__ (float64 tensor), add to it in update, turn sums into a value in compute."""

    stats: torch.Tensor

    def update(self, outputs: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self, stats: torch.Tensor) -> float:
        raise NotImplementedError


class Mean(Metric):
    """Mean of per-sample values (outputs is a 1-D tensor of them; target unused)."""

    def __init__(self):
        self.stats = torch.zeros(2, dtype=torch.float64)

    def update(self, outputs, target=None):
        v = outputs.detach().double().reshape(-1)
        self.stats += torch.stack([v.sum().cpu(), torch.tensor(float(v.numel()), dtype=torch.float64)])

    def compute(self, stats):
        return (stats[0] / stats[1]).item() if stats[1] > 0 else float("nan")


class Accuracy(Mean):
    """Top-1 accuracy of class logits."""

    def update(self, outputs, target):
        super().update((outputs.argmax(dim=-1) == target).double())


class MeanSquaredError(Mean):
    def update(self, outputs, target):
        super().update(((outputs.detach().double() - target.double()) ** 2).reshape(-1))
