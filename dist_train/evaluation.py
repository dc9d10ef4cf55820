"""Evaluation: the recipe's loss and metrics over an eval set, exact across ranks.

Shared by the training loop (every `train.eval_every` steps) and `dist-train evaluate CHECKPOINT`. Each rank runs
its share of the set (dist_train.data.eval_batches: every sample exactly once across ranks, every rank the same
number of forwards, as a sharded model needs); the metrics' sufficient statistics are combined across ranks before
anything is divided (dist_train.metrics.reduce_metrics), so the figures do not depend on the world size.
"""

from __future__ import annotations

from typing import Callable, ContextManager

import torch

from dist_train.data import eval_batches, to_device
from dist_train.metrics import Mean, reduce_metrics


@torch.no_grad()
def evaluate(model: torch.nn.Module, recipe, dataset, batch_size: int, rank: int, world_size: int,
             device: torch.device, autocast: Callable[[], ContextManager]) -> dict[str, float]:
    """{"loss": ..., **recipe metrics}; a collective: every rank calls it. Leaves the model in eval mode."""
    model.eval()
    metrics = {"loss": Mean(), **recipe.metrics()}
    for batch, valid in eval_batches(dataset, batch_size, rank, world_size):
        batch = to_device(batch, device)
        with autocast():
            outputs = recipe.forward(model, batch)
            loss = recipe.loss(outputs, batch)
        if not valid:
            continue  # a padding batch: ran only so that sharded models see the same collectives on every rank
        if isinstance(loss, (tuple, list)):  # token-weighted: the eval loss is sum / count over the whole set
            metrics["loss"].add(*loss)
        else:
            metrics["loss"].update(loss.detach().float().expand(recipe.batch_size(batch)))
        targets = recipe.targets(batch)
        for name, metric in metrics.items():
            if name != "loss":
                metric.update(outputs.float() if isinstance(outputs, torch.Tensor) else outputs, targets)
    # Combine the statistics of every rank first, then divide: exact whatever each rank saw.
    return reduce_metrics(metrics, device)
