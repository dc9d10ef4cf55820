"""The order samples are drawn in: a keyed pseudo-random permutation of [0, N), evaluated only where needed.

`EpochOrder(n, seed, epoch)[positions]` is the sample index at each position of epoch `epoch`'s order. It replaces
a per-epoch `randperm(n)` (8 bytes x N on every rank, and O(N) time to draw) with a bijection computed on the fly,
so memory and set-up time are the same for N = 10^4 as for N = 10^12 and a step costs O(its batch).

The permutation, exactly (so that a hand-written loop can reproduce it; `EpochOrder` is the reference):
- Domain: b = the bit length of N - 1, at least 2, rounded up to even; h = b / 2. Positions and indices are b-bit
  numbers; a b-bit x splits into halves L = x >> h and R = x & (2^h - 1).
- Round keys (all arithmetic modulo 2^64): base = mix(mix(seed) ^ mix(epoch + G) ^ mix(stream + 2G)) with
  G = 0x9E3779B97F4A7C15, and k_r = mix(base + (r + 1) * G) for r = 0..5. `stream` is 0 for samples, 1 for the
  shard order of streaming sources, so the two never share keys.
- mix(z) is the SplitMix64 finaliser: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
  z ^= z >> 31.
- One Feistel round r: (L, R) -> (R, L ^ (mix(R ^ k_r) & (2^h - 1))); six rounds make the permutation P of [0, 2^b).
- Cycle walking: index(p) = P(p), applied again while the result is >= N. P is a bijection of [0, 2^b) and
  2^b < 4N, so this is a bijection of [0, N) and takes fewer than 4 applications on average.
"""

from __future__ import annotations

import numpy as np
import torch

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
ROUNDS = 6
SAMPLES, SHARDS = 0, 1  # key streams: the sample order of map-style data, the shard order of streaming sources


def mix_int(z: int) -> int:
    """SplitMix64's finaliser on a Python int (mod 2^64)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix_(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place on a uint64 array: they wrap on overflow, which is the modulo-2^64
    arithmetic it is defined with. In place because at batch sizes the cost is numpy's per-call overhead."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def round_keys(seed: int, epoch: int, stream: int = SAMPLES) -> list[int]:
    base = mix_int(mix_int(seed) ^ mix_int(epoch + GOLDEN) ^ mix_int(stream + 2 * GOLDEN))
    return [mix_int(base + (r + 1) * GOLDEN) for r in range(ROUNDS)]


class EpochOrder:
    """The permutation of [0, n) used in one epoch. Index it with an int, a slice or an array of positions; the
    result is the sample index (a LongTensor for slices and arrays). Costs O(1) memory whatever n is."""

    def __init__(self, n: int, seed: int, epoch: int, stream: int = SAMPLES):
        if not 0 < n < 2**62:
            raise ValueError(f"EpochOrder: n={n} must be in [1, 2^62)")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.keys = np.array(round_keys(seed, epoch, stream), dtype=np.uint64)
        self._keys = [np.uint64(k) for k in self.keys]
        self._shift, self._low = np.uint64(self.half), np.uint64((1 << self.half) - 1)

    def __len__(self) -> int:
        return self.n

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._shift, x & self._low
        for k in self._keys:
            f = _mix_(right ^ k)
            f &= self._low
            f ^= left
            left, right = right, f
        left <<= self._shift
        left |= right
        return left

    def indices(self, positions) -> np.ndarray:
        """Sample indices (int64) at the given positions (ints in [0, n))."""
        x = np.asarray(positions, dtype=np.uint64)
        if x.size and int(x.max()) >= self.n:
            raise IndexError(f"EpochOrder: position {int(x.max())} out of range for n={self.n}")
        x = self._feistel(x)
        outside = x >= np.uint64(self.n)
        while outside.any():  # cycle walking: expected < 4 rounds, each on a shrinking subset
            x[outside] = self._feistel(x[outside])
            outside = x >= np.uint64(self.n)
        return x.astype(np.int64)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            return torch.from_numpy(self.indices(np.arange(start, stop, step, dtype=np.uint64)))
        if isinstance(key, (int, np.integer)):
            if not -self.n <= key < self.n:
                raise IndexError(f"EpochOrder: position {key} out of range for n={self.n}")
            return int(self.indices(np.array([key % self.n]))[0])
        return torch.from_numpy(self.indices(torch.as_tensor(key).numpy() if isinstance(key, torch.Tensor) else key))


def epoch_order(n: int, seed: int, epoch: int) -> EpochOrder:
    """The order of epoch `epoch` of a map-style dataset of n samples (see the module docstring)."""
    return EpochOrder(n, seed, epoch, SAMPLES)
