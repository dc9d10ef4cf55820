"""What resume picks when checkpoints are damaged: `auto` names what it skipped and why and falls back to the
newest intact one; an explicit path gets one line and exit 2. The step reported is the folder's, never a field of
the (untrusted) manifest."""

from __future__ import annotations

import pytest

from checkpoint_support import copy_run, edit_manifest, train
from dist_train.checkpoint import Checkpointer
from dist_train.cluster import DistEnv
from dist_train.config.schema import CheckpointConfig
from dist_train.errors import UsageError


def find(run, resume="auto"):
    return Checkpointer(CheckpointConfig(resume=str(resume)), run / "checkpoints", DistEnv.single()).find_resume()


@pytest.fixture
def run(saved_run, tmp_path):
    return copy_run(saved_run, tmp_path / "run")


@pytest.mark.parametrize("fields, reason", [
    ({"files": ["__0_0.distcp"]}, "checkpoint.json: files is ['__0_0.distcp'], expected a mapping"),
    ({"files": {"__0_0.distcp": 7}}, "checkpoint.json: files['__0_0.distcp'] is 7"),
    ({"model": None}, "checkpoint.json: model is None"),
    ({"global_batch": 0}, "checkpoint.json: global_batch is 0"),
    ({"step": 7}, "checkpoint.json says step 7 in folder step_10"),
])
def test_auto_falls_back_past_a_damaged_manifest(run, capsys, fields, reason):
    step10 = run / "checkpoints" / "step_10"
    edit_manifest(step10, **fields)
    assert find(run).step == 5
    out = capsys.readouterr().out
    assert f"checkpoint: {step10} is damaged ({reason}" in out and "falling back to the previous one" in out


def test_auto_says_which_checkpoint_it_skipped_when_the_manifest_was_deleted(run, capsys):
    step10 = run / "checkpoints" / "step_10"
    (step10 / "checkpoint.json").unlink()
    assert find(run).step == 5
    assert (f"checkpoint: skipping {step10}: no checkpoint.json (its manifest was deleted, or the save never "
            "finished)") in capsys.readouterr().out


def test_explicit_damaged_manifest_is_one_line(run):
    step10 = run / "checkpoints" / "step_10"
    edit_manifest(step10, global_batch=0)
    with pytest.raises(UsageError) as e:
        find(run, step10)
    assert str(e.value) == (
        f"checkpoint.resume: '{step10}' is not a usable checkpoint: checkpoint.json: global_batch is 0, expected an "
        "integer >= 1; give auto, never or the path of a checkpoint folder (run_dir/checkpoints/step_<N>)")


def test_damaged_manifest_given_explicitly_through_the_cli(run):
    step10 = run / "checkpoints" / "step_10"
    edit_manifest(step10, files={"__0_0.distcp": 7})
    explicit = train(run, f"checkpoint.resume={step10}", "train.max_steps=12", check=False)
    assert explicit.returncode == 2
    assert explicit.stderr.strip().splitlines() == [
        f"dist-train: error: checkpoint.resume: '{step10}' is not a usable checkpoint: checkpoint.json: "
        "files['__0_0.distcp'] is 7, expected {\"size\": bytes, \"sha256\": 64 hex digits}; give auto, never or the "
        "path of a checkpoint folder (run_dir/checkpoints/step_<N>)"]
