"""Data order and batching that do not depend on the world size.

The rule: the order in which samples are consumed depends only on the seed, the epoch and the global batch size.
Epoch e uses the permutation drawn from `seed + e`; global step k of the epoch takes the next `global_batch`
indices of it and splits them into world_size x grad_accum micro-batches of `batch_size` (rank-major: rank r owns
a contiguous block, and walks it micro-step by micro-step). The set of samples in a global step is therefore the
same on 1 process x grad_accum 2 as on 2 processes x grad_accum 1, which is what makes those runs give the same
losses, and a run can resume at (epoch, step-in-epoch) by arithmetic instead of replaying the loader. The last
incomplete global batch of an epoch is dropped so every optimizer step averages the same number of samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch


@dataclass(frozen=True)
class BatchLayout:
    batch_size: int  # per rank, per micro-step
    grad_accum: int
    world_size: int
    rank: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=g)


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    return num_samples // global_batch


def micro_batch_indices(perm: torch.Tensor, step_in_epoch: int, layout: BatchLayout) -> list[torch.Tensor]:
    """This rank's micro-batches (index tensors) for one global step."""
    start = step_in_epoch * layout.global_batch + layout.rank * layout.batch_size * layout.grad_accum
    return [
        perm[start + m * layout.batch_size: start + (m + 1) * layout.batch_size]
        for m in range(layout.grad_accum)
    ]


class InMemoryDataset:
    """Tensors indexed along dim 0. `__getitems__` fetches a whole batch with one gather per tensor instead of
    `batch_size` Python calls plus a collate: the fast path for datasets that fit in memory."""

    def __init__(self, *tensors: torch.Tensor):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError(f"InMemoryDataset needs tensors of equal length along dim 0, got lengths "
                             f"{[len(t) for t in tensors]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i):
        return tuple(t[i] for t in self.tensors)

    def __getitems__(self, indices):
        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(indices)
        return tuple(t[idx] for t in self.tensors)

    @staticmethod
    def collate(batch):
        return batch  # __getitems__ already returned the batch


def fetch(dataset, indices: torch.Tensor):
    """One batch from a map-style dataset, batched fetch when the dataset supports it."""
    if isinstance(dataset, InMemoryDataset):
        return dataset.__getitems__(indices)
    from torch.utils.data import default_collate
    return default_collate([dataset[int(i)] for i in indices])


class _StepSampler:
    """Yields this rank's micro-batch index lists for the steps of one epoch, starting at `start_step`."""

    def __init__(self, perm, start_step, num_steps, layout):
        self.perm, self.start_step, self.num_steps, self.layout = perm, start_step, num_steps, layout

    def __iter__(self):
        for step in range(self.start_step, self.num_steps):
            for idx in micro_batch_indices(self.perm, step, self.layout):
                yield idx.tolist()

    def __len__(self):
        return (self.num_steps - self.start_step) * self.layout.grad_accum


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator (distinct per rank, see below); derive the others from it.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def train_batches(
    dataset, layout: BatchLayout, seed: int, start_epoch: int, start_step_in_epoch: int, num_workers: int
) -> Iterator[tuple[int, int, list[Any]]]:
    """Endless (epoch, step_in_epoch, micro_batches) for this rank, from the given position on."""
    n = len(dataset)
    per_epoch = steps_per_epoch(n, layout.global_batch)
    epoch, step = start_epoch, start_step_in_epoch
    while True:
        perm = epoch_permutation(n, seed, epoch)
        if num_workers == 0:
            # In-process: index directly, no DataLoader machinery between the sampler and the tensors.
            for s in range(step, per_epoch):
                yield epoch, s, [fetch(dataset, idx) for idx in micro_batch_indices(perm, s, layout)]
        else:
            from torch.utils.data import DataLoader

            loader = DataLoader(
                dataset,
                batch_sampler=_StepSampler(perm, step, per_epoch, layout),
                num_workers=num_workers,
                collate_fn=InMemoryDataset.collate if isinstance(dataset, InMemoryDataset) else None,
                worker_init_fn=_seed_worker,
                generator=torch.Generator().manual_seed(seed * 7919 + layout.rank * 104_729 + epoch),
                persistent_workers=False,
            )
            it = iter(loader)
            for s in range(step, per_epoch):
                yield epoch, s, [next(it) for _ in range(layout.grad_accum)]
        epoch, step = epoch + 1, 0


def eval_batches(dataset, batch_size: int, rank: int, world_size: int) -> Iterator[tuple[Any, bool]]:
    """(batch, valid) for this rank's share of the eval set (indices rank, rank+W, ...): every sample exactly once
    across ranks. Every rank yields the same number of batches, padding with `valid=False` repeats where its share
    is shorter, because a sharded model (FSDP) needs every rank in every forward's collectives."""
    idx = torch.arange(rank, len(dataset), world_size)
    longest = -(-len(dataset) // world_size)
    for start in range(0, longest, batch_size):
        chunk = idx[start: start + batch_size]
        if len(chunk):
            yield fetch(dataset, chunk), True
        else:
            yield fetch(dataset, torch.zeros(1, dtype=torch.long)), False


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
