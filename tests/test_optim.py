"""Optimizers by name and the warmup + decay schedule."""

from __future__ import annotations

import math

import pytest
import torch

from dist_train.config.schema import OptimizerConfig, SchedulerConfig
from dist_train.optim import build_optimizer, build_scheduler, lr_multiplier


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_optimizers(name, cls):
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimizerConfig(name=name, lr=0.1, momentum=0.9))
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.1
    if name in ("sgd", "rmsprop"):
        assert opt.param_groups[0]["momentum"] == 0.9


def test_warmup_then_cosine_and_linear():
    cos = SchedulerConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, cos, 110) == pytest.approx(0.1)
    assert lr_multiplier(9, cos, 110) == pytest.approx(1.0)
    assert lr_multiplier(60, cos, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(110, cos, 110) == pytest.approx(0.1)
    lin = SchedulerConfig(name="linear", warmup_steps=0)
    assert lr_multiplier(25, lin, 100) == pytest.approx(0.75)
    assert lr_multiplier(500, SchedulerConfig(name="constant", warmup_steps=4), 100) == 1.0


def test_scheduler_drives_optimizer_lr():
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimizerConfig(lr=1.0))
    sched = build_scheduler(opt, SchedulerConfig(name="linear", warmup_steps=2), max_steps=12)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.9])
