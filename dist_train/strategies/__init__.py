"""Strategies by name. Each lives in its own module and is imported only when chosen (deepspeed is heavy)."""

from __future__ import annotations

import importlib

from dist_train.cluster import DistEnv

STRATEGIES = {
    "single": "dist_train.strategies.single:SingleStrategy",
    "ddp": "dist_train.strategies.ddp:DDPStrategy",
    "fsdp": "dist_train.strategies.fsdp:FSDPStrategy",
    "deepspeed": "dist_train.strategies.deepspeed:DeepSpeedStrategy",
}


def resolve_name(name: str, env: DistEnv) -> str:
    """`auto` is single on one process, ddp on several. Wrapping one process in DDP only adds overhead, so an
    explicit `ddp` on one process also runs as `single` (the same config then works from a laptop to a cluster)."""
    if name in ("auto", "ddp"):
        return "ddp" if env.is_distributed else "single"
    return name


def strategy_class(name: str):
    module_name, _, class_name = STRATEGIES[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_strategy(config, env: DistEnv, device):
    return strategy_class(resolve_name(config.strategy, env))(config, env, device)
