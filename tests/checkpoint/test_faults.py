"""Faults during and after saving: a crash between writing the shards and the commit, damaged files, a full disk.
Each leaves the previous checkpoint intact and a resumed run identical to an uninterrupted one."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

from checkpoint_support import losses, train
from dist_train.checkpoint.integrity import verify


def test_crash_between_shard_write_and_commit_keeps_the_previous_checkpoint(tmp_path, references):
    ref = references.get("single")
    run = tmp_path / "run"
    killed = train(run, check=False, DIST_TRAIN_TEST_KILL_AT="commit:20")
    assert killed.returncode == -9
    ckpts = run / "checkpoints"
    partial = ckpts / ".tmp-step_20"
    assert (partial / ".metadata").is_file() and not (partial / "checkpoint.json").exists()
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_10", "step_15", "step_5"]  # keep: 3
    assert verify(ckpts / "step_15").step == 15  # intact: every checksum matches
    resumed = train(run)
    assert f"removing unfinished save {partial}" in resumed.stdout and "(step 15)" in resumed.stdout
    assert not list(ckpts.glob(".tmp-*"))
    assert losses(run) == losses(ref)


def _stopped_at_20(tmp_path) -> Path:
    run = tmp_path / "run"
    train(run, DIST_TRAIN_TEST_STOP_AFTER_STEP=20)
    return run


def test_truncated_checkpoint_is_detected_and_auto_falls_back(tmp_path, references):
    ref = references.get("single")
    run = _stopped_at_20(tmp_path)
    shard = run / "checkpoints" / "step_20" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    resumed = train(run)
    assert "step_20 is damaged (file __0_0.distcp has" in resumed.stdout and "(truncated?)" in resumed.stdout
    assert "(step 15)" in resumed.stdout
    assert losses(run) == losses(ref)
    assert verify(run / "checkpoints" / "step_20").step == 20  # re-saved when the resumed run got there again


def test_altered_checkpoint_given_explicitly_is_refused(tmp_path):
    run = _stopped_at_20(tmp_path)
    shard = run / "checkpoints" / "step_20" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    shard.write_bytes(bytes(data))
    result = train(run, f"checkpoint.resume={shard.parent}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dist-train: error: checkpoint.resume: '{shard.parent}' is not a usable checkpoint: file __0_0.distcp does "
        "not match its SHA-256 checksum (altered or corrupted); give auto, never or the path of a checkpoint folder "
        "(run_dir/checkpoints/step_<N>)"
    ]
    assert max(losses(run)) == 20  # nothing was trained, nothing rewritten


def _checkpoint_bytes_on_tmpfs(step_dir: Path) -> int:
    return sum(math.ceil(p.stat().st_size / 4096) * 4096 for p in step_dir.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root")
def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, references):
    one = _checkpoint_bytes_on_tmpfs(references.get("single") / "checkpoints" / "step_30")
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    ckpts.mkdir(parents=True)
    # Room for one checkpoint and a half: the first save fits, the second runs out of space half way.
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={one * 3 // 2}", "tmpfs", str(ckpts)], check=True)
    try:
        result = train(run, check=False)
        assert result.returncode == 1, result.stderr[-3000:]
        assert result.stderr.strip().splitlines() == [
            f"dist-train: error: checkpoint: saving step 10 into {ckpts} failed: No space left on device; "
            f"the last complete checkpoint {ckpts / 'step_5'} is intact"
        ]
        assert sorted(p.name for p in ckpts.iterdir()) == ["step_5"]  # the partial save was removed
        assert verify(ckpts / "step_5").step == 5
    finally:
        subprocess.run(["umount", str(ckpts)], check=True)
