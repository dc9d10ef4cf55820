"""Rank 0 does no work proportional to the checkpoint's size: each rank hashes what it writes while writing it,
and at resume each rank verifies a share of the files; rank 0 only merges the digests. Seen from the files each
rank opens for reading (2 real ranks under torchrun, through the real Checkpointer)."""

from __future__ import annotations

import json
from pathlib import Path

from dist_train.checkpoint.hashing import balanced_shares
from support import run_torchrun_script

WORKER = Path(__file__).with_name("hashing_worker.py")


def test_each_rank_hashes_its_own_files_and_verifies_a_share(tmp_path):
    result = run_torchrun_script(2, WORKER, tmp_path / "checkpoints")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rank0, rank1 = report["ranks"]
    # Saving through DCP: no rank re-reads a checkpoint file, rank 0 not even the other rank's shard.
    assert rank0["save1"] == [] and rank1["save1"] == []
    # A strategy writing its own files: each rank hashes a share (one of the two 1 MB files), none both.
    assert not set(rank0["save2"]) & set(rank1["save2"])
    assert sorted(rank0["save2"] + rank1["save2"]) == ["own_0.pt", "own_1.pt", "rng_rank0.pt", "rng_rank1.pt",
                                                       "trainer_state.pt"]
    assert len({"own_0.pt", "own_1.pt"} & set(rank0["save2"])) == 1
    # The manifest's digests are those of the bytes on disk, for every file of both saves.
    assert report["listed"] == report["actual"]
    assert {"1/__0_0.distcp", "1/__1_0.distcp", "1/rng_rank1.pt", "1/.metadata", "1/trainer_state.pt",
            "1/strategy_state.pt"} <= set(
        report["listed"])
    # Resume: the two 1 MB shards are verified by different ranks; no file is read twice.
    verified = {0: set(rank0["verify"]) - {"checkpoint.json"}, 1: set(rank1["verify"])}
    assert not verified[0] & verified[1]
    assert verified[0] | verified[1] == {k.split("/", 1)[1] for k in report["listed"] if k.startswith("1/")}
    assert len({"__0_0.distcp", "__1_0.distcp"} & verified[0]) == 1
    assert report["resumed"] == 1


def test_balanced_shares_split_bytes_evenly_and_deterministically():
    sizes = {"a": 100, "b": 90, "c": 10, "d": 5, "e": 5}
    shares = balanced_shares(sizes, 2)
    assert shares == [["a", "d"], ["b", "c", "e"]] == balanced_shares(dict(reversed(sizes.items())), 2)
    assert balanced_shares(sizes, 1) == [["a", "b", "c", "d", "e"]]
    assert balanced_shares({"a": 1}, 3) == [["a"], [], []]
