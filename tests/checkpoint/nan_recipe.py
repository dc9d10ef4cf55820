"""mlp_regression whose loss is NaN at chosen steps on one chosen rank (to test train.on_nan)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.distributed as dist

from dist_train.recipes.mlp_regression import MLPRegression


@dataclass
class NanConfig:
    steps: list[int] = field(default_factory=list)  # optimizer steps (from 1) whose loss becomes NaN
    rank: int = 0
    grad_accum: int = 1  # micro-batches per step, to count steps from loss calls


class NanAtSteps(MLPRegression):
    sections = {**MLPRegression.sections, "nan": NanConfig}

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def loss(self, outputs, batch):
        loss = super().loss(outputs, batch)
        if outputs.requires_grad:  # training, not eval
            cfg = self.config.section("nan")
            step = self.calls // cfg.grad_accum + 1
            self.calls += 1
            rank = dist.get_rank() if dist.is_initialized() else 0
            if step in cfg.steps and rank == cfg.rank:
                loss = loss * float("nan")
        return loss
