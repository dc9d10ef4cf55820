"""The epoch order: a keyed bijection of [0, N), checked exhaustively at small N, for mixing at moderate N, and
for constant cost at N = 10^12."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dist_train.data import EpochOrder, epoch_order
from dist_train.data.order import SHARDS


def test_is_a_permutation_for_every_small_n():
    # Every n up to 300 (domains of 2 to 10 bits, odd and even bit counts) plus the sizes around powers of four,
    # where the cycle-walking domain is tightest (just over 2^2h) or loosest.
    sizes = list(range(1, 301)) + [s + d for s in (4**6, 4**7, 2**15) for d in (-1, 0, 1)]
    for n in sizes:
        for seed, epoch in ((0, 0), (7, 3)):
            got = epoch_order(n, seed, epoch)[:].numpy()
            assert np.array_equal(np.sort(got), np.arange(n)), (n, seed, epoch)


def test_positions_evaluate_independently_and_agree_with_the_full_permutation():
    order = epoch_order(1000, 5, 2)
    full = order[:]
    positions = np.array([999, 0, 500, 3, 3])
    assert torch.equal(order[positions], full[positions])
    assert order[7] == int(full[7]) and order[-1] == int(full[-1])
    assert torch.equal(order[10:20], full[10:20]) and torch.equal(order[torch.tensor([4, 2])], full[[4, 2]])
    with pytest.raises(IndexError):
        order[np.array([1000])]


def test_keys_differ_by_seed_epoch_and_stream_and_repeat_exactly():
    n = 5000
    base = epoch_order(n, 1, 0)[:]
    assert torch.equal(base, epoch_order(n, 1, 0)[:])
    for other in (epoch_order(n, 2, 0), epoch_order(n, 1, 1), EpochOrder(n, 1, 0, stream=SHARDS)):
        assert (other[:] == base).float().mean() < 0.01  # as many fixed points as two random permutations share


def test_mixes_neighbouring_positions_and_epochs():
    n = 200_000
    p = epoch_order(n, 0, 0)[:].numpy().astype(np.float64)
    q = epoch_order(n, 0, 1)[:].numpy().astype(np.float64)
    # For a uniform random permutation each correlation is ~N(0, 1/n): |r| < 0.01 is over 4 standard deviations.
    assert abs(np.corrcoef(p[:-1], p[1:])[0, 1]) < 0.01
    assert abs(np.corrcoef(p, np.arange(n))[0, 1]) < 0.01
    assert abs(np.corrcoef(p, q)[0, 1]) < 0.01
    # Mean displacement |p(i) - i| of a random permutation is n/3; a weak shuffle stays near its start.
    assert abs(np.abs(p - np.arange(n)).mean() / n - 1 / 3) < 0.01
    # Consecutive positions land in unrelated places: the gap between neighbours is also ~n/3 on average.
    assert abs(np.abs(np.diff(p)).mean() / n - 1 / 3) < 0.01


def test_each_position_is_uniform_over_keys():
    # Where position 0 lands over 2000 seeds, for n = 10: a chi-square test of uniformity (9 degrees of freedom;
    # 27.9 is the 0.1% critical value).
    n, seeds = 10, 2000
    counts = np.bincount([epoch_order(n, s, 0)[0] for s in range(seeds)], minlength=n)
    expected = seeds / n
    assert ((counts - expected) ** 2 / expected).sum() < 27.9


def test_cost_does_not_grow_with_n():
    big = epoch_order(10**12, 3, 1)
    idx = big[10**11: 10**11 + 4096]
    assert idx.dtype == torch.int64 and len(set(idx.tolist())) == 4096
    assert int(idx.min()) >= 0 and int(idx.max()) < 10**12
    assert big.keys.nbytes == 48  # the whole state: six 64-bit round keys
