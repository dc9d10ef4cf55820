"""Streaming sources: shards dealt to (rank, worker) per epoch, exact resume from a loader's state, and resume on
another layout at shard-offset granularity. In-process; the multi-rank behaviour runs under torchrun in
tests/data/test_streaming_ranks.py."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch

from dist_train.data import BatchLayout
from dist_train.data.streaming import JsonlStream, ShardedStream, StreamLoader, TokenShardStream, shard_plan
from dist_train.errors import UsageError
from dist_train.train_state import TrainState

LENGTHS = [7, 3, 12, 5, 9, 4]  # samples per shard: uneven on purpose


class Counting(ShardedStream):
    """Shard i holds samples (i, 0), (i, 1), ...: every sample says where it came from."""

    def __init__(self, lengths=LENGTHS):
        self.lengths = lengths

    def shards(self):
        return [f"s{i}" for i in range(len(self.lengths))]

    def read(self, shard, start):
        i = int(shard[1:])
        for k in range(start, self.lengths[i]):
            yield torch.tensor([i, k])


def loader(workers=0, layout=None, state=None, lengths=LENGTHS):
    """A StreamLoader registered with a TrainState, restored from `state` = (global, local) as a checkpoint has."""
    layout = layout or BatchLayout(2, 2, 1, 0)
    stream = StreamLoader(Counting(lengths), layout, seed=0, num_workers=workers, device=torch.device("cpu"))
    stream.train_state = TrainState()
    stream.register(stream.train_state)
    if state is not None:
        shared, local = state
        stream.train_state.load_state_dict({"step": 0, "epoch": 0, "samples_in_epoch": 0, "components": shared})
        if local is not None:
            stream.train_state.load_local_state_dict(local)
    return stream


def take(stream, steps):
    """`steps` steps of batches, and after each the (global, local) state a checkpoint would save."""
    it, out, states = stream.batches(), [], []
    for _ in range(steps):
        epoch, step, micro = next(it)
        out.append((epoch, step, [tuple(map(tuple, m.tolist())) for m in micro]))
        stream.gather_state()
        states.append((stream.train_state.state_dict()["components"], stream.train_state.local_state_dict()))
    return out, states


def test_epoch_plans_partition_the_shards_and_change_every_epoch():
    for epoch in range(3):
        plans = [shard_plan(10, 0, epoch, slot, 4) for slot in range(4)]
        assert sorted(s for p in plans for s in p) == list(range(10))
        assert [len(p) for p in plans] == [3, 3, 2, 2]
    assert shard_plan(10, 0, 0, 0, 4) != shard_plan(10, 0, 1, 0, 4)
    assert shard_plan(3, 0, 0, 5, 8) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_any_step_gives_the_same_batches(workers):
    reference, states = take(loader(workers), 14)  # crosses an epoch end
    assert {e for e, _, _ in reference} == {0, 1}
    seen = [sample for e, _, micro in reference if e == 0 for m in micro for sample in m]
    assert len(seen) == len(set(seen))  # no sample twice within an epoch
    for k in (0, 3, 7, 10):
        resumed, _ = take(loader(workers, state=states[k]), 13 - k)
        assert resumed == reference[k + 1:], k


def test_state_loads_with_weights_only(tmp_path):
    _, states = take(loader(2), 3)
    torch.save(states[-1], tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True) == states[-1]
    assert states[-1][1]["stream_rank"]["loader"] is not None  # every worker's position, from StatefulDataLoader


def test_resume_on_another_layout_continues_every_shard_from_its_offset():
    # Two ranks stop after 2 steps (before any rank's shards run out, so no collective is needed); their
    # positions, merged as the trainer saves them, resume on 1 rank x 2 workers.
    ranks = []
    consumed = []
    for rank in range(2):
        out, states = take(loader(0, BatchLayout(2, 1, 2, rank)), 2)
        consumed += [s for _, _, micro in out for m in micro for s in m]  # take() made them (shard, k) tuples
        ranks += states[-1][0]["stream"]["ranks"]  # without a process group each rank gathers only itself
    resumed = loader(2, BatchLayout(2, 1, 1, 0), state=({"stream": {"ranks": ranks}}, None))
    it = resumed.batches()
    epoch, rest = 0, []
    while epoch == 0:
        epoch, _, micro = next(it)
        rest += [tuple(s.tolist()) for m in micro for s in m] if epoch == 0 else []
    assert not set(consumed) & set(rest)  # nothing repeated
    offsets = defaultdict(list)
    for shard, k in consumed + rest:
        offsets[shard].append(k)
    for shard, ks in offsets.items():  # nothing skipped: each shard read as one run 0, 1, 2, ... from its start
        assert sorted(ks) == list(range(len(ks))), (shard, sorted(ks))


def test_too_few_shards_for_the_ranks_is_one_line():
    with pytest.raises(UsageError, match="2 shards for 2 ranks x 2 workers: the last rank would read nothing"):
        loader(2, BatchLayout(2, 1, 2, 0), lengths=[5, 5])


def test_token_shard_and_jsonl_streams(shards, tmp_path):
    from data_support import token_stream

    tokens = token_stream(shards)
    stream = TokenShardStream(shards, seq_len=10)
    first = stream.shards()[1]
    x, y = next(stream.read(first, start=3))
    assert torch.equal(x, torch.from_numpy(tokens[4000 + 30: 4000 + 40].astype("int64")))
    assert torch.equal(y, torch.from_numpy(tokens[4000 + 31: 4000 + 41].astype("int64")))
    files = []
    for i in range(3):
        files.append(tmp_path / f"part{i}.jsonl")
        files[-1].write_text("".join(json.dumps({"v": 10 * i + k}) + "\n" for k in range(4)))
    records = JsonlStream(files, transform=lambda r: r["v"])
    assert records.shards() == sorted(map(str, files)) and list(records.read(str(files[2]), 1)) == [21, 22, 23]


def test_progress_saved_right_after_an_exact_resume_still_counts_every_worker():
    # 1 rank x 2 workers, accum 1: a step takes one batch, from one worker. Resume exactly after 3 steps, take 1 more
    # (from one worker only), checkpoint, resume that on 0 workers: nothing read twice, nothing skipped.
    layout = BatchLayout(2, 1, 1, 0)
    first, states = take(loader(2, layout), 3)
    second, states = take(loader(2, layout, state=states[-1]), 1)
    third = loader(0, layout, state=(states[-1][0], None))  # another worker count: the merged progress
    it, rest, epoch = third.batches(), [], 0
    while epoch == 0:
        epoch, _, micro = next(it)
        rest += [tuple(s.tolist()) for m in micro for s in m] if epoch == 0 else []
    before = [s for _, _, micro in first + second for m in micro for s in m]
    assert not set(before) & set(rest)
    offsets = defaultdict(list)
    for shard, k in before + rest:
        offsets[shard].append(k)
    assert all(sorted(ks) == list(range(len(ks))) for ks in offsets.values()), offsets
