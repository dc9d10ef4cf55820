"""TokenWindows over memory-mapped shards: the documented windows and split, one gather per batch, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from dist_train.data import BatchLayout, TokenShards, TokenWindows, train_batches
from dist_train.errors import UsageError
from data_support import token_stream


def test_windows_are_the_documented_slices_of_the_stream_across_shards(shards):
    tokens = token_stream(shards).astype(np.int64)  # 13,734 tokens in shards of 4000
    source = TokenShards(shards)
    train, val = TokenWindows(source, 50, "train", val_fraction=0.1), TokenWindows(source, 50, "validation", 0.1)
    windows = (len(tokens) - 1) // 50
    assert (len(train), len(val)) == (windows - int(windows * 0.1), int(windows * 0.1))
    assert train.vocab_size == 257
    for data, first in ((train, 0), (val, len(train))):
        idx = np.arange(len(data))[::-1]  # every window, in a scrambled order; several straddle shard ends
        x, y = data.__getitems__(idx)
        assert x.dtype == torch.int64 and x.shape == (len(data), 50)
        expected = np.stack([tokens[(first + i) * 50: (first + i) * 50 + 51] for i in idx])
        assert np.array_equal(x.numpy(), expected[:, :-1]) and np.array_equal(y.numpy(), expected[:, 1:])
    single = train[79]  # window 79 covers tokens 3950..4000: the first shard boundary
    assert torch.equal(single[0], torch.from_numpy(tokens[3950:4000])) and single[1][-1] == tokens[4000]
    with pytest.raises(IndexError):
        train.__getitems__([len(train)])


def test_remapping_and_pickling_keep_the_data_and_carry_no_mapped_pages(shards):
    plain = TokenWindows(shards, 32)
    remapping = TokenWindows(TokenShards(shards, remap_bytes=1), 32)  # unmaps whenever its file RSS grew
    idx = np.random.default_rng(0).integers(0, len(plain), size=(20, 16))
    for batch in idx:
        pairs = zip(plain.__getitems__(batch), remapping.__getitems__(batch), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    assert remapping.shards.remaps >= 1 and plain.shards.remaps == 0
    blob = pickle.dumps(plain)
    assert len(blob) < 4000  # what a DataLoader worker receives: the index, never the mapped tokens
    assert torch.equal(pickle.loads(blob).__getitems__(idx[0])[0], plain.__getitems__(idx[0])[0])


def test_worker_loader_matches_in_process(shards):
    data = TokenWindows(shards, 16)
    layout = BatchLayout(batch_size=8, grad_accum=2, world_size=1, rank=0)
    direct = train_batches(data, layout, seed=4, start_epoch=0, start_step_in_epoch=0, num_workers=0)
    workers = train_batches(data, layout, seed=4, start_epoch=0, start_step_in_epoch=0, num_workers=2)
    for _ in range(5):
        (e1, s1, b1), (e2, s2, b2) = next(direct), next(workers)
        assert (e1, s1) == (e2, s2) and all(torch.equal(x[0], y[0]) for x, y in zip(b1, b2, strict=True))


def test_too_short_corpus_and_out_of_vocabulary_tokens_are_one_line(shards, tmp_path):
    with pytest.raises(UsageError, match="too few for windows of 20000 \\+ 1 tokens"):
        TokenWindows(shards, 20000)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    data = np.fromfile(copy / "shard_00001.bin", dtype="<u2")
    data[100] = 4000  # sizes still match, so verify=size lets it through; the gather refuses it
    data.tofile(copy / "shard_00001.bin")
    windows = TokenWindows(copy, 100)
    with pytest.raises(UsageError, match=r"shard_00001.bin: token 4000 at byte offset 200 is outside the vocabulary"):
        windows.__getitems__(np.arange(len(windows)))
    with pytest.raises(UsageError, match="shard_00001.bin: altered at byte offset 0"):
        TokenWindows(copy, 100, verify="full")
