"""FSDP2 (`torch.distributed.fsdp.fully_shard`): parameters, gradients and optimizer state sharded across ranks.

Each unit the recipe names (`Recipe.fsdp_units`, default: each top-level child with parameters) becomes one
FSDP group: its full parameters are all-gathered just before it runs and freed after, so peak memory is one unit's
parameters plus the shards. The root is sharded last and owns whatever parameters the units did not take.

- Precision: with bf16/fp16 FSDP keeps fp32 sharded parameters (the optimizer's master copy), computes with
  params cast to the low dtype and reduces gradients in fp32 (`MixedPrecisionPolicy`), so no autocast is needed.
- Accumulation: on non-final micro-steps gradients are neither reduce-scattered (`set_requires_gradient_sync`)
  nor are parameters resharded after backward (the next micro-step's forward would all-gather them again).
- Clipping: gradients are DTensor shards; the norm must be the norm of the *whole* gradient, i.e. the local
  norms combined across ranks. `get_total_norm` on the DTensor grads does that reduction (torch 2.13 returns a
  replicated DTensor; older releases a partial one, which `full_tensor()` reduces). Computing it from the local
  shards (`grad.to_local()`, the known trap) would clip each rank by a different factor: the equivalence test
  catches that (its losses drift from ddp's by ~1e-2 relative within 10 steps).
- One process: nothing to shard. The run goes on unsharded (same config from a laptop to a cluster, as ddp does),
  with autocast for bf16, and still applies activation checkpointing and compile; `describe()` says so in the
  start-up line.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from dist_train.recipe import Recipe
from dist_train.strategies.base import DTYPES, TorchStrategy
from dist_train.strategies.transforms import apply_activation_checkpointing, apply_compile


def apply_fully_shard(model: nn.Module, units: list[nn.Module], mesh, precision: str) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    low = None if precision == "fp32" else DTYPES[precision]
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    # The root returns fp32 outputs so the loss (and the logged value) is computed in fp32 as under ddp.
    root_policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32, output_dtype=torch.float32)
    fully_shard(model, mesh=mesh, mp_policy=root_policy)


class FSDPStrategy(TorchStrategy):
    name = "fsdp"

    @property
    def sharded(self) -> bool:
        return self.env.is_distributed

    def describe(self) -> str:
        extras = [x for x, on in (("activation checkpointing", self.config.fsdp.activation_checkpointing),
                                  ("compile", self.config.train.compile)) if on]
        where = f"sharded over {self.env.world_size} ranks" if self.sharded else "1 process: unsharded"
        return f"fsdp ({', '.join([where, *extras])})"

    def setup(self, model: nn.Module, recipe: Recipe, layout) -> None:
        self.units = recipe.fsdp_units(model)
        super().setup(model, recipe, layout)

    def wrap(self, model: nn.Module) -> nn.Module:
        # Fixed order, see dist_train/strategies/transforms.py: checkpointing, compile, then sharding.
        if self.config.fsdp.activation_checkpointing:
            apply_activation_checkpointing(self.units)
        if self.config.train.compile:
            apply_compile(self.units)
        if self.sharded:
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(self.device.type, (self.env.world_size,))
            apply_fully_shard(model, self.units, mesh, self.config.train.precision)
        return model

    def autocast(self) -> ContextManager:
        return contextlib.nullcontext() if self.sharded else super().autocast()

    def micro_step(self, is_last: bool) -> ContextManager:
        if self.sharded:
            self.model.set_requires_gradient_sync(is_last)
            self.model.set_reshard_after_backward(is_last)
        return contextlib.nullcontext()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()  # the whole gradient's norm, on every rank
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm
