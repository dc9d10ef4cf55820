"""fashion_mnist_convnet: trains on generated idx files, one process and 2-process DDP, augmentation and EMA on."""

from __future__ import annotations

import pytest

from support import RECIPES, read_metrics, run_cli, run_torchrun, train_losses

TINY = ["model.channels=[4,8,8]", "train.batch_size=16", "train.max_steps=8", "train.log_every=1",
        "train.eval_every=8", "train.eval_batch_size=64", "scheduler.warmup_steps=0", "train.ema=0.5"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_trains_a_few_steps(fashion_root, tmp_path, nproc):
    args = ["train", RECIPES / "fashion_mnist_convnet.yaml", f"data.root={fashion_root}", f"run_dir={tmp_path}", *TINY]
    result = run_cli(*args) if nproc == 1 else run_torchrun(2, *args, timeout=600)
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(1, 9)) and all(0 < v < 10 for v in losses.values())
    evals = [r for r in read_metrics(tmp_path) if "eval/accuracy" in r]
    assert evals and 0.0 <= evals[-1]["eval/accuracy"] <= 1.0 and 0.0 <= evals[-1]["eval/f1"] <= 1.0
    assert (tmp_path / "ema_model.pt").is_file()
    assert f"world size {nproc}" in result.stdout
