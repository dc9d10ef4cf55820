"""mlp_regression: one process and 2-process DDP on generated data; a global batch larger than the data is a
one-line error that counts the world size."""

from __future__ import annotations

import pytest

from support import RECIPES, read_metrics, run_cli, run_torchrun, train_losses

TINY = ["dataset.n_train=512", "dataset.n_eval=64", "model.hidden=16", "train.batch_size=32", "train.max_steps=10",
        "train.log_every=1", "train.eval_every=10", "scheduler.warmup_steps=0"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_trains_a_few_steps(tmp_path, nproc):
    args = ["train", RECIPES / "mlp_regression.yaml", f"run_dir={tmp_path}", *TINY]
    run_cli(*args) if nproc == 1 else run_torchrun(2, *args, timeout=600)
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(1, 11)) and all(0 < v < 100 for v in losses.values())
    assert [r for r in read_metrics(tmp_path) if "eval/mse" in r][-1]["eval/mse"] > 0


def test_too_little_data_for_batch_times_world_size(tmp_path):
    r = run_torchrun(2, "train", RECIPES / "mlp_regression.yaml", f"run_dir={tmp_path}", *TINY,
                     "dataset.n_train=100", "train.batch_size=64", check=False, timeout=600)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("dist-train: error")]
    assert lines and ("global batch 64 x grad_accum 1 x world size 2 = 128 exceeds the 100 training samples"
                      in lines[0]), r.stderr[-2000:]
    assert "dist_train/runner.py" not in r.stderr  # no worker traceback (torchrun prints its own summary)
