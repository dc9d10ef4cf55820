"""A step's loss from its micro-batches: the mean of means, or token-weighted over the whole global batch.

`Recipe.loss` returns either a scalar (the mean over its micro-batch) or a pair `(sum, count)`: the summed loss
and how many items it sums over (non-padding tokens, unmasked positions). With variable-length samples the mean of
per-micro-batch means weights a token of a short micro-batch more than one of a long micro-batch, so its gradient
is not the gradient of one large batch and changes with the split into ranks and accumulation steps (Hugging Face
transformers had this bug, #35203). With pairs, each micro-batch backpropagates its sum; after the last one, one
all-reduce per step gives the global (sum, count) and the gradients are scaled by world_size / count (the strategy
has averaged them over ranks): the result is the gradient of sum / count over the whole global batch, the same on
1 process x accum 4 as on 4 processes x accum 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dist_train import distributed
from dist_train.errors import UsageError


class StepLoss:
    def __init__(self, grad_accum: int, device: torch.device, l1_penalty: Callable[[], torch.Tensor] | None = None):
        self.accum, self.device, self.l1_penalty = grad_accum, device, l1_penalty
        self.weighted: bool | None = None  # decided by the first micro-batch's loss
        # No zero tensors to start from (two allocations per step): the first micro-batch's values are the sums.
        self.total: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def _sum(self, running: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
        # One micro-batch (accum 1) needs no float64 sum: its detached loss is the step's, without a copy.
        if self.accum > 1 or self.weighted:
            value = value.double()
        return value if running is None else running + value

    def add(self, loss) -> torch.Tensor:
        """Record one micro-batch's loss; returns what to backpropagate for it."""
        weighted = isinstance(loss, (tuple, list))
        if self.weighted is not None and weighted != self.weighted:
            raise UsageError("Recipe.loss: returned a (sum, count) pair for some micro-batches and a mean for others; "
                             "return the same kind for every batch")
        self.weighted = weighted
        if not weighted:
            self.total = self._sum(self.total, loss.detach())
            # The L1 term rides along in every micro-batch, so it too adds up to once per step.
            objective = loss + self.l1_penalty() if self.l1_penalty else loss
            return objective / self.accum if self.accum > 1 else objective  # x / 1 would be one more op
        if self.l1_penalty is not None:
            raise UsageError("train.l1: not supported with a token-weighted (sum, count) loss, whose gradients are "
                             "rescaled after backward; add the penalty to the recipe's loss or set train.l1=0")
        if len(loss) != 2:
            raise UsageError(f"Recipe.loss: a token-weighted loss is a (sum, count) pair, got {len(loss)} values")
        total, count = loss
        self.total = self._sum(self.total, total.detach())
        self.count = self._sum(self.count, torch.as_tensor(count, device=self.device).detach())
        return total

    def finish(self, strategy, world_size: int) -> torch.Tensor:
        """After the last micro-batch's backward: the step's loss (this rank's mean, or the global token-weighted
        mean), scaling the gradients first when weighted."""
        if not self.weighted:
            if self.accum == 1:
                return self.total if self.total.dtype == torch.float32 else self.total.float()
            return (self.total / self.accum).float()
        both = distributed.all_reduce_(torch.stack([self.total, self.count]))  # the one collective per step
        count = both[1].clamp(min=1.0)  # an all-padding global batch: zero gradients, not a division by zero
        strategy.scale_gradients(world_size / count)
        return (both[0] / count).float()
