"""Bad resume input: one line naming the path/keys, exit code 2, nothing on disk changed."""

from __future__ import annotations

from checkpoint_support import losses, train

HINT = "give auto, never or the path of a checkpoint folder (run_dir/checkpoints/step_<N>)"


def test_resume_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope" / "step_5"
    result = train(tmp_path / "run", f"checkpoint.resume={missing}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"dist-train: error: checkpoint.resume: '{missing}' does not exist; {HINT}"]


def test_resume_path_that_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    result = train(tmp_path / "run", f"checkpoint.resume={folder}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dist-train: error: checkpoint.resume: '{folder}' is not a usable checkpoint: no checkpoint.json (an "
        f"unfinished save, a deleted manifest, or not a checkpoint folder); {HINT}"
    ]


def test_checkpoint_of_another_model_shape_names_the_keys(tmp_path):
    run = tmp_path / "run"
    train(run, "train.max_steps=5")
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    result = train(run, "model.hidden=32", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dist-train: error: checkpoint.resume: {run / 'checkpoints' / 'step_5'} holds another model (recipe "
        "mlp_regression); shapes differ (checkpoint vs model): 0.weight (16, 8) vs (32, 8), 0.bias (16,) vs (32,), "
        "2.weight (1, 16) vs (1, 32). Resume it with the config it was trained with, or set checkpoint.resume=never"
    ]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert max(losses(run)) == 5
