"""Optimizers, parameter groups and learning-rate schedules from config.

Parameter groups (`param_groups(model, cfg)`) are decided by parameter *names* as the recipe's model has them
(`layers.0.attn.wq.weight`) and module types, on the unwrapped model, so every strategy (single, ddp, fsdp,
deepspeed) builds the same groups: weight decay 0 for the kinds in `optimizer.no_decay` (biases, norm weights,
embeddings by default), then `optimizer.param_groups` rules (first regex that matches wins) with their own
lr_scale and weight_decay. Each group carries its `name` and `lr_scale`, which the optimizer's state_dict (and
so every checkpoint) keeps alongside lr and weight_decay.

The schedule is a multiplier on `optimizer.lr` as a function of the optimizer step: linear warmup from 0 over
`warmup_steps`, then constant, cosine or linear decay to `min_lr_ratio` at `train.max_steps`. It multiplies each
group's own initial lr, so lr_scale holds at every step.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import torch
from torch import nn

from dist_train.config.schema import OptimizerConfig, SchedulerConfig
from dist_train.errors import UsageError

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)


def parameter_kind(name: str, module: nn.Module) -> str | None:
    """'bias', 'norm', 'embedding' (the `optimizer.no_decay` kinds) or None for a parameter of `module`. A norm is
    a torch norm layer or any module whose class name ends in 'Norm' (recipes write their own RMSNorm)."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, NORMS) or type(module).__name__.endswith("Norm"):
        return "norm"
    if name.rpartition(".")[2] == "bias":
        return "bias"
    return None


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """The optimizer's parameter groups for `model` (unwrapped: names as the recipe wrote them). Tied parameters
    count once, under their first name."""
    patterns = []
    for i, rule in enumerate(cfg.param_groups):
        key = f"optimizer.param_groups[{i}].match"
        if not rule.match:
            raise UsageError(f"{key}: empty; give a regular expression over parameter names, e.g. 'embed'")
        try:
            patterns.append(re.compile(rule.match))
        except re.error as e:
            raise UsageError(f"{key}: {rule.match!r} is not a regular expression ({e})") from None
    groups: dict[str, dict] = {}
    matched, seen = [0] * len(patterns), set()
    for module_name, module in model.named_modules():
        for short, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{module_name}.{short}" if module_name else short
            decay = parameter_kind(name, module) not in cfg.no_decay
            key, lr_scale, weight_decay = ("decay", 1.0, cfg.weight_decay) if decay else ("no_decay", 1.0, 0.0)
            for i, pattern in enumerate(patterns):
                if pattern.search(name):
                    matched[i] += 1
                    rule = cfg.param_groups[i]
                    key, lr_scale = f"param_groups[{i}]", rule.lr_scale
                    weight_decay = weight_decay if rule.weight_decay is None else rule.weight_decay
                    key += "" if rule.weight_decay is not None or decay else ".no_decay"
                    break
            group = groups.setdefault(key, {"name": key, "params": [], "lr": cfg.lr * lr_scale,
                                            "lr_scale": lr_scale, "weight_decay": weight_decay})
            group["params"].append(p)
    for i, count in enumerate(matched):
        if not count:
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            examples = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise UsageError(f"optimizer.param_groups[{i}].match: {cfg.param_groups[i].match!r} matches no parameter "
                             f"of the model; names look like: {examples}")
    return list(groups.values())


def build_optimizer(params: Iterable[torch.nn.Parameter] | list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """From parameters (one group with the config's lr and weight_decay) or from `param_groups(...)`."""
    params = list(params)
    if params and not isinstance(params[0], dict):
        params = [p for p in params if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise AssertionError(cfg.name)  # the config loader only lets the four names through


def lr_multiplier(step: int, cfg: SchedulerConfig, max_steps: int) -> float:
    """Multiplier for the update made at optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.name == "constant":
        return 1.0
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.name == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, max_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg, max_steps))
