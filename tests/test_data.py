"""The data-order rule: which samples a global step uses depends on seed, epoch and global batch only."""

from __future__ import annotations

import torch

from dist_train.data import (BatchLayout, InMemoryDataset, epoch_permutation, eval_batches, micro_batch_indices,
                             train_batches)


def step_samples(world_size: int, grad_accum: int, batch_size: int, step: int, epoch: int = 0, n: int = 1000):
    perm = epoch_permutation(n, seed=3, epoch=epoch)
    out = []
    for rank in range(world_size):
        for idx in micro_batch_indices(perm, step, BatchLayout(batch_size, grad_accum, world_size, rank)):
            assert len(idx) == batch_size
            out.append(idx)
    return torch.cat(out)


def test_same_global_batch_same_samples_whatever_the_layout():
    for step in range(5):
        reference = step_samples(1, 8, 4, step)
        for world, accum in ((2, 4), (4, 2), (8, 1), (1, 8)):
            assert torch.equal(step_samples(world, accum, 4, step), reference)
        # and the layout is a partition: no sample twice in a step
        assert len(set(reference.tolist())) == 32


def test_epochs_reshuffle_and_cover_each_sample_once():
    a, b = epoch_permutation(100, 0, 0), epoch_permutation(100, 0, 1)
    assert not torch.equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert torch.equal(a, epoch_permutation(100, 0, 0)) and not torch.equal(a, epoch_permutation(100, 1, 0))


def test_train_batches_resume_position_is_arithmetic_and_matches_full_iteration():
    data = InMemoryDataset(torch.arange(50).float(), torch.arange(50))
    layout = BatchLayout(batch_size=4, grad_accum=2, world_size=1, rank=0)  # 6 steps/epoch, 2 left over
    full = train_batches(data, layout, seed=1, start_epoch=0, start_step_in_epoch=0, num_workers=0)
    seq = [next(full) for _ in range(10)]
    assert [(e, s) for e, s, _ in seq] == [(0, i) for i in range(6)] + [(1, i) for i in range(4)]
    resumed = train_batches(data, layout, seed=1, start_epoch=1, start_step_in_epoch=1, num_workers=0)
    for expected in seq[7:]:
        got = next(resumed)
        assert got[:2] == expected[:2]
        assert all(torch.equal(g[1], x[1]) for g, x in zip(got[2], expected[2]))


def test_worker_loader_yields_same_batches_as_in_process():
    data = InMemoryDataset(torch.randn(40, 3), torch.arange(40))
    layout = BatchLayout(batch_size=4, grad_accum=2, world_size=2, rank=1)
    direct = train_batches(data, layout, seed=0, start_epoch=0, start_step_in_epoch=1, num_workers=0)
    workers = train_batches(data, layout, seed=0, start_epoch=0, start_step_in_epoch=1, num_workers=1)
    for _ in range(6):  # crosses an epoch boundary (5 steps/epoch at global batch 16 of 40... 2 steps/epoch)
        (e1, s1, b1), (e2, s2, b2) = next(direct), next(workers)
        assert (e1, s1) == (e2, s2)
        assert all(torch.equal(x[1], y[1]) for x, y in zip(b1, b2))


def test_eval_shards_cover_every_sample_once_with_equal_batch_counts():
    data = InMemoryDataset(torch.arange(11).float(), torch.arange(11))
    seen, counts = [], []
    for rank in range(3):
        batches = list(eval_batches(data, batch_size=2, rank=rank, world_size=3))
        counts.append(len(batches))
        seen += [int(i) for b, valid in batches if valid for i in b[1]]
    assert sorted(seen) == list(range(11)) and len(set(counts)) == 1
