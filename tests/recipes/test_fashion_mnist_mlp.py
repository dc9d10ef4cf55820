"""fashion_mnist_mlp: one process and 2-process DDP on generated idx files."""

from __future__ import annotations

import pytest

from support import RECIPES, read_metrics, run_cli, run_torchrun, train_losses

TINY = ["train.batch_size=32", "train.max_steps=8", "train.log_every=1", "train.eval_every=8",
        "scheduler.warmup_steps=0", "model.dropout=0.1"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_trains_a_few_steps(fashion_root, tmp_path, nproc):
    args = ["train", RECIPES / "fashion_mnist_mlp.yaml", f"data.root={fashion_root}", f"run_dir={tmp_path}", *TINY]
    run_cli(*args) if nproc == 1 else run_torchrun(2, *args, timeout=600)
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(1, 9)) and all(0 < v < 10 for v in losses.values())
    assert [r for r in read_metrics(tmp_path) if "eval/accuracy" in r][-1]["eval/accuracy"] > 0.1
