"""Module buffers (BatchNorm running statistics) kept the same on every rank where the strategy does not do it.

DDP broadcasts rank 0's buffers before every forward, so every rank evaluates, and every checkpoint holds, rank
0's statistics. FSDP2 and DeepSpeed leave buffers alone: each rank's BatchNorm tracks the statistics of its own
micro-batches, so the logged eval mixed every rank's statistics while the checkpoint (written from rank 0) held
one rank's, and the exported model evaluated differently from the logged figure. Here rank 0's buffers are
broadcast before the first eval-mode forward after training forwards and before each checkpoint, which gives
exactly ddp's values (rank 0's statistics follow rank 0's micro-batches under every strategy) at the points where
they are read, without a collective per training step. Only persistent buffers (those in the state_dict) travel:
constants such as rotary tables are the same everywhere by construction.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def named_persistent_buffers(module: nn.Module):
    """(name, buffer) of the buffers a state_dict holds."""
    for prefix, m in module.named_modules():
        for name, b in m._buffers.items():
            if b is not None and name not in m._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), b


def persistent_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b for _, b in named_persistent_buffers(module) if type(b) is torch.Tensor]


def broadcast_from_rank0(tensors: list[torch.Tensor]) -> None:
    """Rank 0's values of `tensors` on every rank (a collective: every rank calls it with the same list)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for t in tensors:
            dist.broadcast(t, src=0)


def sync_buffers(module: nn.Module) -> None:
    """Rank 0's persistent buffers on every rank (every rank must call this)."""
    broadcast_from_rank0(persistent_buffers(module))


def keep_buffers_in_sync(module: nn.Module) -> None:
    """Sync buffers before the first eval-mode forward that follows training forwards. Every rank runs the same
    eval forwards (dist_train.data.eval_batches pads for that), so the broadcast is collective."""
    if not persistent_buffers(module):
        return
    stale = [False]

    def before_forward(mod, args):
        if mod.training:
            stale[0] = True
        elif stale[0]:
            sync_buffers(mod)
            stale[0] = False

    module.register_forward_pre_hook(before_forward)
