"""`train.sync_batchnorm`: BatchNorm normalising with the statistics of the global batch (all ranks).

On GPUs this is torch's `nn.SyncBatchNorm`. On CPU torch refuses it twice (torch 2.13): its forward raises
"SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone", and DDP raises "SyncBatchNorm layers
only work with GPU modules" for any `nn.SyncBatchNorm` it finds. So on CPU each BatchNorm*d keeps its class's
checks and gets `GlooSync`'s forward, which computes the same thing with one differentiable all-reduce of (sum,
sum of squares, count) per channel (`torch.distributed.nn.functional.all_reduce`, whose backward all-reduces the
gradients): the batch mean and biased variance of all ranks' samples normalise, and the running statistics take
the unbiased variance, as `nn.BatchNorm` and `nn.SyncBatchNorm` do. Every rank then tracks identical running
statistics. The module's parameter and buffer names do not change, so checkpoints are those of plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class GlooSync:
    """Mixed into a BatchNorm*d class (see convert_sync_batchnorm); the statistics of every rank's batch."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        channels, dims = input.shape[1], [0, *range(2, input.dim())]
        x = input.double()  # sums of squares in float64: E[x^2] - E[x]^2 loses nothing that matters then
        count = torch.tensor([input.numel() / channels], dtype=torch.float64, device=input.device)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean, var = stats[:channels] / n, stats[channels: 2 * channels] / n - (stats[:channels] / n) ** 2
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


_SYNCED: dict[type, type] = {}


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm*d of `model` synchronised across ranks (same parameters and buffers)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        cls = type(module)
        synced = isinstance(module, (GlooSync, nn.SyncBatchNorm))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not synced:
            if cls not in _SYNCED:
                _SYNCED[cls] = type(f"Sync{cls.__name__}", (GlooSync, cls), {"__module__": __name__})
            module.__class__ = _SYNCED[cls]
    return model
