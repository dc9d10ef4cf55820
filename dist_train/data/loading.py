"""Map-style datasets into batches: the training stream of a rank, the evaluation shards, host-to-device copies.

A rank's training batches follow `layout.py` over the epoch order of `order.py`: step k of epoch e is the same set
of samples whatever the world size, and a run resumes at (epoch, step in epoch) by arithmetic. With
`data.num_workers > 0` one DataLoader serves the whole run: its batch sampler runs through the epochs itself, so
the workers are started once and keep prefetching across epoch boundaries (what `persistent_workers` gives a
per-epoch loader, without the refill stall at each epoch start).

Randomness inside a dataset (a random crop in `__getitem__`) runs in the workers; each micro-batch reseeds them
from (seed, epoch, step, micro-batch of the global step), so it is the same on every layout and after a resume.
"""

from __future__ import annotations

import random
from typing import Any
from collections.abc import Iterator

import numpy as np
import torch

from dist_train.data.layout import BatchLayout, steps_per_epoch
from dist_train.data.order import epoch_order, mix_int


class BatchDataset:
    """A map-style dataset whose `__getitems__(indices)` returns the whole collated batch (one gather per tensor,
    not `batch_size` Python calls plus a collate). Subclass it; `fetch` and the loaders then skip the collate."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitems__(self, indices):
        raise NotImplementedError

    def __getitem__(self, i):
        return tuple(t[0] for t in self.__getitems__(torch.tensor([int(i)])))

    @staticmethod
    def collate(batch):
        return batch  # __getitems__ already returned the batch


class InMemoryDataset(BatchDataset):
    """Tensors indexed along dim 0: the fast path for datasets that fit in memory."""

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


def fetch(dataset, indices):
    """One batch from a map-style dataset, batched fetch when the dataset supports it."""
    if isinstance(dataset, BatchDataset):
        return dataset.__getitems__(indices)
    from torch.utils.data import default_collate
    return default_collate([dataset[int(i)] for i in indices])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def micro_batch_seed(seed: int, epoch: int, step_in_epoch: int, global_micro: int) -> int:
    return mix_int(mix_int(mix_int(seed) ^ epoch) ^ (step_in_epoch << 20) ^ global_micro) % 2**63


PIPE_BYTES = 1 << 20


class _Packed:
    """A small CPU tensor crossing from a worker as numpy bytes through the pipe: torch's default, a shared-memory
    segment plus a file descriptor per storage, cost 2.1 ms per 33 KB batch against 0.8 ms this way (2 workers,
    loaded 2-core machine). PIPE_BYTES, where copying stops paying, is a choice, not a measurement."""

    def __init__(self, tensor: torch.Tensor):
        self.array = tensor.numpy()


def _pack(batch):
    if isinstance(batch, torch.Tensor):
        return _Packed(batch) if batch.device.type == "cpu" and not batch.requires_grad else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_pack(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _pack(v) for k, v in batch.items()}
    return batch


def _unpack(batch):
    if isinstance(batch, _Packed):
        return torch.from_numpy(batch.array)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_unpack(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _unpack(v) for k, v in batch.items()}
    return batch


def _nbytes(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.numel() * batch.element_size()
    if isinstance(batch, (list, tuple)):
        return sum(_nbytes(b) for b in batch)
    if isinstance(batch, dict):
        return sum(_nbytes(v) for v in batch.values())
    return 0


class _SeededFetch:
    """What the DataLoader workers index: (seed, indices) from the sampler; reseed, then fetch the batch. Small
    batches travel as numpy through the pipe unless they are to be pinned (CUDA), where torch's path is needed."""

    def __init__(self, dataset, pack: bool):
        self.dataset, self.pack = dataset, pack

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, seeded):
        seed, indices = seeded
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)  # torch.manual_seed also visits every accelerator: ~1 ms
        batch = fetch(self.dataset, indices)
        return _pack(batch) if self.pack and _nbytes(batch) <= PIPE_BYTES else batch


def rank_steps(n: int, seed: int, layout: BatchLayout, epoch: int, start_step: int, chunk: int = 16384):
    """(step_in_epoch, [indices of each micro-batch]) for this rank over the rest of an epoch. The order is
    evaluated for this rank's positions only, ~`chunk` positions at a time: one vectorised call instead of one
    per micro-batch, whose fixed cost (numpy call overhead) would exceed the work at small batch sizes."""
    order, per_epoch = epoch_order(n, seed, epoch), steps_per_epoch(n, layout.global_batch)
    local = layout.batch_size * layout.grad_accum
    offsets = np.arange(local, dtype=np.int64) + layout.rank * local
    for first in range(start_step, per_epoch, max(1, chunk // local)):
        steps = np.arange(first, min(per_epoch, first + max(1, chunk // local)), dtype=np.int64)
        idx = order.indices((steps[:, None] * layout.global_batch + offsets).ravel())
        idx = torch.from_numpy(idx).view(len(steps), layout.grad_accum, layout.batch_size)
        for s, micro in zip(steps.tolist(), idx, strict=True):
            yield s, list(micro.unbind(0))


class _StepSampler:
    """Yields (seed, indices) for each of this rank's micro-batches, epoch after epoch, from a position on."""

    def __init__(self, n: int, seed: int, layout: BatchLayout, start_epoch: int, start_step: int):
        self.n, self.seed, self.layout, self.start = n, seed, layout, (start_epoch, start_step)

    def __iter__(self):
        epoch, step = self.start
        while True:
            for s, micro in rank_steps(self.n, self.seed, self.layout, epoch, step):
                for m, idx in enumerate(micro):
                    # numpy, not a tensor: it is pickled to a worker, and a tensor would cross in shared memory
                    yield micro_batch_seed(self.seed, epoch, s, self.layout.global_micro_index(m)), idx.numpy()
            epoch, step = epoch + 1, 0


def train_batches(
    dataset, layout: BatchLayout, seed: int, start_epoch: int, start_step_in_epoch: int, num_workers: int,
    pin_memory: bool = False, prefetch_factor: int = 2,
) -> Iterator[tuple[int, int, list[Any]]]:
    """Endless (epoch, step_in_epoch, micro_batches) for this rank, from the given position on."""
    n = len(dataset)
    per_epoch = steps_per_epoch(n, layout.global_batch)
    if num_workers == 0:
        # In-process: index directly, no DataLoader machinery between the order and the tensors.
        epoch, step = start_epoch, start_step_in_epoch
        while True:
            for s, micro in rank_steps(n, seed, layout, epoch, step):
                yield epoch, s, [fetch(dataset, idx) for idx in micro]
            epoch, step = epoch + 1, 0
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _SeededFetch(dataset, pack=not pin_memory),
        batch_sampler=_StepSampler(n, seed, layout, start_epoch, start_step_in_epoch),
        num_workers=num_workers,
        collate_fn=BatchDataset.collate,  # _SeededFetch returns collated batches
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
    )
    it = iter(loader)
    epoch, step = start_epoch, start_step_in_epoch
    while True:
        for s in range(step, per_epoch):
            yield epoch, s, [_unpack(next(it)) for _ in range(layout.grad_accum)]
        epoch, step = epoch + 1, 0


class MapLoader:
    """The training batches of a map-style dataset: `train_batches` from a position set by `seek`. Its state is
    the position alone, (epoch, samples of it consumed), which the trainer keeps: state_dict() has nothing more."""

    def __init__(self, dataset, layout: BatchLayout, seed: int, num_workers: int, pin_memory: bool = False,
                 prefetch_factor: int = 2):
        self.dataset, self.layout, self.seed = dataset, layout, seed
        self.options = {"num_workers": num_workers, "pin_memory": pin_memory, "prefetch_factor": prefetch_factor}
        self.steps_per_epoch: int | None = steps_per_epoch(len(dataset), layout.global_batch)
        self.start = (0, 0)

    def seek(self, epoch: int, step_in_epoch: int) -> None:
        self.start = (epoch, step_in_epoch)

    def batches(self) -> Iterator[tuple[int, int, list[Any]]]:
        return train_batches(self.dataset, self.layout, self.seed, *self.start, **self.options)

    def register(self, state) -> None:
        """Nothing to register: the position is TrainState's epoch and samples_in_epoch."""

    def gather_state(self) -> None:
        """Nothing to collect before a checkpoint."""


def build_train_loader(dataset, layout: BatchLayout, seed: int, data, device: torch.device):
    """A MapLoader, or a StreamLoader for a streaming source (dist_train.data.streaming); `data`: DataConfig."""
    from torch.utils.data import IterableDataset

    options = {"pin_memory": device.type == "cuda", "prefetch_factor": data.prefetch_factor}
    if not isinstance(dataset, IterableDataset):
        return MapLoader(dataset, layout, seed, data.num_workers, **options)
    from dist_train.data.streaming import ShardedStream, StreamLoader
    from dist_train.errors import UsageError

    if not isinstance(dataset, ShardedStream):
        raise UsageError(f"recipe: the training dataset is a {type(dataset).__name__}, an IterableDataset that is not "
                         "a dist_train.data.ShardedStream; streaming sources implement shards() and read(shard, "
                         "start) so that their position can be checkpointed (docs/data.md)")
    return StreamLoader(dataset, layout, seed, data.num_workers, device, **options)


def eval_batches(dataset, batch_size: int, rank: int, world_size: int) -> Iterator[tuple[Any, bool]]:
    """(batch, valid) for this rank's share of the eval set (indices rank, rank+W, ...): every sample exactly once
    across ranks. Every rank yields the same number of batches, padding with `valid=False` repeats where its share
    is shorter, because a sharded model (FSDP) needs every rank in every forward's collectives."""
    from torch.utils.data import IterableDataset

    if isinstance(dataset, IterableDataset):
        from dist_train.errors import UsageError

        raise UsageError(f"recipe: the eval dataset is a {type(dataset).__name__}, a streaming dataset; evaluation "
                         "needs a map-style dataset (len and indexing), e.g. TokenWindows(path, seq_len, 'validation')")
    idx = torch.arange(len(dataset))[rank::world_size]  # empty for a rank beyond a set smaller than the world
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
