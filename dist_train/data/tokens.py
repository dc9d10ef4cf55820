"""The memory-mapped dataset over token shards written by `dist-train data prepare`.

`TokenShards(path)` reads and checks DIR/index.json and maps the shards with `np.memmap` on first use, in each
process (DataLoader workers included: nothing mapped is pickled). The shards form one token stream (index order).
`TokenWindows(path_or_shards, seq_len, split)` cuts that stream into windows of seq_len + 1 tokens at stride
seq_len: window w is tokens [w * seq_len, w * seq_len + seq_len + 1), sample = (inputs, targets) = (window[:-1],
window[1:]) as int64, so every token after the first is a target exactly once. Windows cross shard and document
boundaries (documents are separated by the end-of-text token). Split rule: of the W = (tokens - 1) // seq_len
windows, the last max(1, int(W * val_fraction)) are "validation", the others "train".

A batch is one vectorised gather (numpy fancy indexing of the mapped shards for all its windows at once), not
`batch_size` Python calls. Pages a process reads stay mapped into it, so its resident set would grow towards the
corpus size (a read fault maps far more than the window: readahead and large page-cache folios made it ~400 KB
per 2 KB window on the Linux 6.18 machine of docs/data.md). So the reader watches its file-backed resident memory
(/proc/self/statm, at every batch) and drops its maps when they have grown by `remap_bytes`; they reopen lazily.
RSS stays flat; the pages stay in the OS page cache, which the kernel manages.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dist_train.data.index import ShardIndex, read_index, verify_shards
from dist_train.data.loading import BatchDataset
from dist_train.errors import UsageError

SPLITS = ("train", "validation")
REMAP_BYTES = 256 << 20
# Window bytes read between two looks at the resident set: a read fault can map ~200x the bytes asked for, so
# look at every batch of any size (a look is one small read of /proc/self/statm, ~10 us).
CHECK_BYTES = 16 << 10


def file_resident_bytes() -> int | None:
    """File-backed (plus shared) resident memory of this process, or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[2]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError, AttributeError):
        return None


class TokenShards:
    """The token stream of a prepared folder. `verify`: "size" checks that the shards exist with the sizes the
    index says (cheap, always); "full" also checks every block checksum and SHA-256 (reads the whole corpus)."""

    def __init__(self, path: str | Path, verify: str = "size", key: str = "data.path",
                 remap_bytes: int = REMAP_BYTES):
        if verify not in ("size", "full"):
            raise UsageError(f"data.verify: {verify!r} is not one of size, full")
        self.index: ShardIndex = read_index(path, key)
        verify_shards(self.index, full=verify == "full", key=key)
        self.key, self.remap_bytes = key, remap_bytes
        self.starts = np.cumsum([0] + [s.tokens for s in self.index.shards], dtype=np.int64)
        self.dtype = np.dtype(self.index.dtype).newbyteorder("<")
        self._maps: dict[int, np.memmap] = {}
        self._check_every = max(1, min(CHECK_BYTES, remap_bytes // 8))
        self._since_check, self._since_remap, self._baseline = self._check_every, 0, None
        self.remaps = 0  # how often the maps were dropped (in this process)

    @property
    def vocab_size(self) -> int:
        return self.index.vocab_size

    @property
    def eos_id(self) -> int | None:
        return self.index.eos_id

    def __len__(self) -> int:
        return int(self.starts[-1])

    def tokenizer(self):
        """The tokenizer the shards were written with: .encode(text) -> ids, .decode(ids) -> text."""
        from dist_train.data import tokenizer

        return tokenizer.load(self.index)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"], state["_baseline"] = {}, None  # each process maps the files itself
        return state

    def _map(self, shard: int) -> np.memmap:
        mm = self._maps.get(shard)
        if mm is None:
            info = self.index.shards[shard]
            mm = np.memmap(self.index.path_of(info), dtype=self.dtype, mode="r", shape=(info.tokens,))
            self._maps[shard] = mm
        return mm

    def gather(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Tokens [s, s + length) of the stream for each s in `starts`, as an array [len(starts), length]."""
        starts = np.asarray(starts, dtype=np.int64)
        positions = starts[:, None] + np.arange(length, dtype=np.int64)
        if self.remap_bytes:
            self._bound_resident(len(starts) * length * self.dtype.itemsize)
        if len(self.starts) == 2:
            return self._map(0)[positions]
        out = np.empty(positions.shape, dtype=self.dtype)
        first = np.searchsorted(self.starts, starts, side="right") - 1
        last = np.searchsorted(self.starts, starts + length - 1, side="right") - 1
        inside = first == last
        for s in np.unique(first[inside]).tolist():  # windows within one shard: one gather per shard touched
            rows = np.flatnonzero(inside & (first == s))
            out[rows] = self._map(s)[positions[rows] - self.starts[s]]
        for row in np.flatnonzero(~inside).tolist():  # the few windows that cross a shard boundary
            shard = np.searchsorted(self.starts, positions[row], side="right") - 1
            for s in range(first[row], last[row] + 1):
                where = shard == s
                out[row, where] = self._map(s)[positions[row, where] - self.starts[s]]
        return out

    def _bound_resident(self, nbytes: int) -> None:
        self._since_check += nbytes
        self._since_remap += nbytes
        if self._since_check < self._check_every:
            return
        self._since_check = 0
        resident = file_resident_bytes()
        if resident is None:
            grown = self._since_remap  # no /proc: the window bytes read since the last remap, a lower bound
        else:
            self._baseline = resident if self._baseline is None else self._baseline
            grown = resident - self._baseline
        if grown > self.remap_bytes:
            self._maps, self._since_remap = {}, 0  # unmap: the pages leave this process, not the page cache
            self._baseline = file_resident_bytes()
            self.remaps += 1

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream, by slicing (no index arrays): for long contiguous reads."""
        stop, parts = min(start + length, len(self)), []
        if self.remap_bytes:
            self._bound_resident(max(stop - start, 0) * self.dtype.itemsize)
        for s in range(int(np.searchsorted(self.starts, start, side="right") - 1), len(self.index.shards)):
            if self.starts[s] >= stop:
                break
            mm = self._map(s)
            parts.append(np.array(mm[max(start - self.starts[s], 0): stop - self.starts[s]]))
        return np.concatenate(parts) if parts else np.empty(0, dtype=self.dtype)

    def check_range(self, tokens: np.ndarray, starts: np.ndarray) -> None:
        """Refuse token ids outside the vocabulary (an altered shard): they would index past the embedding."""
        if tokens.size and int(tokens.max()) >= self.vocab_size:
            row, col = np.argwhere(tokens >= self.vocab_size)[0]
            position = int(starts[row]) + int(col)
            shard = int(np.searchsorted(self.starts, position, side="right") - 1)
            offset = (position - int(self.starts[shard])) * self.dtype.itemsize
            path = self.index.path_of(self.index.shards[shard])
            raise UsageError(f"{self.key}: {path}: token {int(tokens[row, col])} at byte offset {offset} is outside "
                             f"the vocabulary (vocab_size {self.vocab_size}): the shard is altered; check it with "
                             f"dist-train data verify {self.index.folder}")


class TokenWindows(BatchDataset):
    """Windows of seq_len + 1 tokens of a prepared folder, for next-token prediction: sample = (inputs, targets),
    two int64 tensors of seq_len. `source`: the folder (data.path) or a TokenShards shared by both splits."""

    def __init__(self, source: str | Path | TokenShards, seq_len: int, split: str = "train",
                 val_fraction: float = 0.05, verify: str = "size"):
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        self.shards = source if isinstance(source, TokenShards) else TokenShards(source, verify)
        self.seq_len, self.split = seq_len, split
        windows = (len(self.shards) - 1) // seq_len
        n_val = max(1, int(windows * val_fraction))
        if windows - n_val < 1:
            raise UsageError(f"{self.shards.key}: {self.shards.index.folder} holds {len(self.shards):,} tokens, "
                             f"too few for windows of {seq_len} + 1 tokens with val_fraction {val_fraction}; prepare "
                             "more text or use a shorter sequence")
        self.first, self.count = (0, windows - n_val) if split == "train" else (windows - n_val, n_val)

    @property
    def vocab_size(self) -> int:
        return self.shards.vocab_size

    def __len__(self) -> int:
        return self.count

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.count):
            raise IndexError(f"TokenWindows: index out of range [0, {self.count})")
        starts = (idx + self.first) * self.seq_len
        tokens = self.shards.gather(starts, self.seq_len + 1)
        self.shards.check_range(tokens, starts)
        window = torch.from_numpy(tokens.astype(np.int64))
        return window[:, :-1], window[:, 1:]
