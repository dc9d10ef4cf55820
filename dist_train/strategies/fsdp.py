"""FSDP2 (`torch.distributed.fsdp.fully_shard`) on a device mesh: plain FSDP, HSDP, and tensor parallel + FSDP.

The mesh (dist_train/parallel_dims.py) is (replicate, shard, tensor). FSDP2 shards each unit the recipe names
(`Recipe.fsdp_units`) over `shard` and, with `fsdp.replicate` > 1, replicates across `replicate` (HSDP: one
all-gather per unit inside a replica group, one gradient all-reduce across groups). With `parallel.tensor` > 1 the
recipe's `tp_plan` first splits every block over `tensor` (DTensor `parallelize_module`); FSDP2 then shards those
shards over the data-parallel dimensions. The order of the transforms, and why: dist_train/strategies/parallelize.py.

- Precision: with bf16/fp16 FSDP keeps fp32 sharded parameters, computes in the low dtype and reduces gradients in
  fp32 (`MixedPrecisionPolicy`, see apply_fsdp), so no autocast is needed.
- Accumulation: on non-final micro-steps gradients are neither reduce-scattered (`set_requires_gradient_sync`)
  nor are parameters resharded after backward (the next micro-step's forward would all-gather them again).
- Clipping: gradients are DTensor shards; the norm must be the norm of the *whole* gradient, i.e. the local
  norms combined across ranks. `get_total_norm` on the DTensor grads does that reduction (torch 2.13 returns a
  replicated DTensor; older releases a partial one, which `full_tensor()` reduces). Computing it from the local
  shards (`grad.to_local()`, the known trap) would clip each rank by a different factor: the equivalence test
  catches that (its losses drift from ddp's by ~1e-2 relative within 10 steps).
- Buffers (BatchNorm statistics) are not sharded and each rank updates its own: they are made rank 0's on every
  rank before evaluation and checkpoints, as ddp does (dist_train/strategies/buffers.py).
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

from dist_train.parallel_dims import ParallelDims
from dist_train.strategies.base import TorchStrategy
from dist_train.strategies.buffers import keep_buffers_in_sync, sync_buffers
from dist_train.strategies.parallelize import parallelize


class FSDPStrategy(TorchStrategy):
    name = "fsdp"

    def check(self) -> None:
        super().check()
        self.dims = ParallelDims.from_config(self.config, self.env.world_size)

    @property
    def sharded(self) -> bool:
        return self.env.is_distributed

    def describe(self) -> str:
        extras = [x for x, on in (("activation checkpointing", self.ac_every),
                                  ("compile", self.config.train.compile)) if on]
        where = self.dims.describe() if self.sharded else "1 process: unsharded"
        return f"fsdp ({', '.join([where, *extras])})"

    def wrap(self, model: nn.Module) -> nn.Module:
        tp_mesh = fsdp_mesh = None
        if self.sharded:
            mesh = self.dims.build_mesh(self.device.type)
            if self.dims.tensor > 1:
                tp_mesh = mesh["tensor"]
            if self.dims.dp > 1:
                fsdp_mesh = ParallelDims.fsdp_mesh(mesh)
        self.fully_sharded = fsdp_mesh is not None
        parallelize(model, self.units, tp_mesh=tp_mesh,
                    tp_plan=self.recipe.tp_plan(model) if tp_mesh is not None else None,
                    ac_every=self.ac_every, compile_modules=self.units if self.config.train.compile else None,
                    fsdp_mesh=fsdp_mesh, precision=self.config.train.precision)
        if self.sharded:
            keep_buffers_in_sync(model)
        return model

    def autocast(self) -> ContextManager:
        return contextlib.nullcontext() if self.fully_sharded else super().autocast()

    def micro_step(self, is_last: bool) -> ContextManager:
        if self.fully_sharded:
            self.model.set_requires_gradient_sync(is_last)
            self.model.set_reshard_after_backward(is_last)
        return contextlib.nullcontext()

    def ema_tensors(self) -> dict[str, torch.Tensor]:
        """The sharded DTensor parameters. After a forward FSDP2 may leave a group unsharded (the root keeps its
        parameters gathered for the backward), with plain full tensors registered in their place: reshard first,
        so that what is read and written is each rank's own shard."""
        if self.fully_sharded:
            from torch.distributed.fsdp import FSDPModule

            for module in self.model.modules():
                if isinstance(module, FSDPModule):
                    module.reshard()
        return super().ema_tensors()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = total_norm([p.grad for p in params])
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    def save_checkpoint(self, directory) -> None:
        sync_buffers(self.model)
        super().save_checkpoint(directory)

    def async_save_checkpoint(self, directory, process_group):
        sync_buffers(self.model)
        return super().async_save_checkpoint(directory, process_group)


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all gradients together, the same on every rank. DTensor gradients on one mesh reduce in one
    `get_total_norm`; a plan that leaves some parameters out of tensor parallelism gives gradients on several
    meshes (or plain tensors), whose norms are combined per mesh and then together."""
    by_mesh: dict[object, list[torch.Tensor]] = {}
    for g in grads:
        by_mesh.setdefault(g.device_mesh if isinstance(g, DTensor) else None, []).append(g)
    norms = []
    for group in by_mesh.values():
        norm = torch.nn.utils.get_total_norm(group)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
