"""Which positions of an epoch's order a rank's micro-batches take: the world-size-invariant batch layout.

Global step k of an epoch takes positions [k * G, (k + 1) * G) of the epoch's order (G = the global batch) and
splits them rank-major into world_size x grad_accum micro-batches of `batch_size`: rank r owns the contiguous
block starting at k * G + r * batch_size * grad_accum and walks it micro-step by micro-step. The samples of a
global step are therefore the same on 1 process x grad_accum 2 as on 2 processes x grad_accum 1. The last
incomplete global batch of an epoch is dropped so that every optimizer step averages the same number of samples.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLayout:
    batch_size: int  # per rank, per micro-step
    grad_accum: int
    world_size: int
    rank: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    def micro_batch_start(self, step_in_epoch: int, micro: int) -> int:
        """First position (in the epoch's order) of this rank's micro-batch `micro` of a step."""
        return (step_in_epoch * self.global_batch + self.rank * self.batch_size * self.grad_accum
                + micro * self.batch_size)

    def global_micro_index(self, micro: int) -> int:
        """Index of this rank's micro-batch `micro` among the step's world_size x grad_accum micro-batches, in
        position order: the same micro-batch gets the same index on every layout with this batch_size."""
        return self.rank * self.grad_accum + micro


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    return num_samples // global_batch


def micro_batch_indices(order, step_in_epoch: int, layout: BatchLayout) -> list:
    """This rank's micro-batches (sample indices) for one global step; `order` is an EpochOrder (or any sequence
    that supports slicing, such as a permutation tensor)."""
    starts = [layout.micro_batch_start(step_in_epoch, m) for m in range(layout.grad_accum)]
    return [order[s: s + layout.batch_size] for s in starts]
