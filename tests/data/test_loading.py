"""The data-order rule: which samples a global step uses depends on seed, epoch and global batch only."""

from __future__ import annotations

import torch

from dist_train.data import (BatchDataset, BatchLayout, InMemoryDataset, epoch_order, eval_batches,
                             micro_batch_indices, train_batches)
from dist_train.data.loading import rank_steps


def step_samples(world_size: int, grad_accum: int, batch_size: int, step: int, epoch: int = 0, n: int = 1000):
    order = epoch_order(n, seed=3, epoch=epoch)
    out = []
    for rank in range(world_size):
        for idx in micro_batch_indices(order, step, BatchLayout(batch_size, grad_accum, world_size, rank)):
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


def test_a_step_takes_the_documented_positions_of_the_order():
    # docs/data.md: step k takes positions [k*G, (k+1)*G) of the epoch's order, rank-major.
    order = epoch_order(1000, 3, 0)
    assert torch.equal(step_samples(2, 2, 4, step=3), order[3 * 16: 4 * 16])
    # and the loaders' chunked evaluation (rank_steps) gives exactly those indices
    for layout in (BatchLayout(4, 2, 2, 1), BatchLayout(3, 1, 1, 0), BatchLayout(5, 3, 4, 2)):
        steps = list(rank_steps(1000, 3, layout, epoch=0, start_step=2, chunk=40))
        assert [s for s, _ in steps] == list(range(2, 1000 // layout.global_batch))
        for s, micro in steps:
            assert all(torch.equal(a, b) for a, b in zip(micro, micro_batch_indices(order, s, layout), strict=True))


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
        assert all(torch.equal(g[1], x[1]) for g, x in zip(got[2], expected[2], strict=True))


class NoisySamples(torch.utils.data.Dataset):
    """A plain (per-sample) dataset with randomness in __getitem__, like a random crop."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.tensor(i), torch.rand(())


def test_worker_loader_yields_same_batches_as_in_process_across_epochs():
    data = InMemoryDataset(torch.randn(40, 3), torch.arange(40))
    layout = BatchLayout(batch_size=4, grad_accum=2, world_size=2, rank=1)  # global batch 16: 2 steps/epoch
    direct = train_batches(data, layout, seed=0, start_epoch=0, start_step_in_epoch=1, num_workers=0)
    workers = train_batches(data, layout, seed=0, start_epoch=0, start_step_in_epoch=1, num_workers=2)
    for _ in range(6):  # one persistent loader crosses three epoch boundaries
        (e1, s1, b1), (e2, s2, b2) = next(direct), next(workers)
        assert (e1, s1) == (e2, s2)
        assert all(torch.equal(x[1], y[1]) for x, y in zip(b1, b2, strict=True))


def test_randomness_in_workers_is_seeded_per_micro_batch_whatever_the_layout():
    def draws(world, accum, workers, start_step=0):
        out = {}
        for rank in range(world):
            layout = BatchLayout(batch_size=4, grad_accum=accum, world_size=world, rank=rank)
            it = train_batches(NoisySamples(), layout, seed=0, start_epoch=0, start_step_in_epoch=start_step,
                               num_workers=workers)
            for _ in range(2 - start_step):
                _, step, micro = next(it)
                for index, noise in micro:
                    out.update({(step, int(i)): float(v) for i, v in zip(index, noise, strict=True)})
        return out

    reference = draws(1, 2, workers=1)
    assert draws(2, 1, workers=2) == reference  # same sample, same step: same random draw
    resumed = draws(1, 2, workers=1, start_step=1)
    assert resumed == {k: v for k, v in reference.items() if k[0] == 1}


def test_batch_dataset_single_item_and_eval_shards_cover_every_sample_once():
    data = InMemoryDataset(torch.arange(11).float(), torch.arange(11))
    assert isinstance(data, BatchDataset)
    seen, counts = [], []
    for rank in range(3):
        batches = list(eval_batches(data, batch_size=2, rank=rank, world_size=3))
        counts.append(len(batches))
        seen += [int(i) for b, valid in batches if valid for i in b[1]]
    assert sorted(seen) == list(range(11)) and len(set(counts)) == 1


def test_eval_set_smaller_than_the_world():
    """2 eval samples on 4 ranks: ranks 2 and 3 have no sample, and still run the one (padding) forward."""
    data = InMemoryDataset(torch.arange(2), torch.arange(2))
    shares = [list(eval_batches(data, batch_size=4, rank=rank, world_size=4)) for rank in range(4)]
    assert [len(s) for s in shares] == [1, 1, 1, 1]
    assert [valid for s in shares for _, valid in s] == [True, True, False, False]
