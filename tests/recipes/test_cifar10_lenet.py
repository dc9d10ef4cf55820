"""cifar10_lenet: torchvision's CIFAR10 class reads generated CIFAR-format pickles (md5 check bypassed), one
process and 2-process DDP, with every classification metric reported."""

from __future__ import annotations

import pytest

from support import RECIPES, make_cifar10, read_metrics, run_cli, run_torchrun, train_losses

TINY = ["train.batch_size=16", "train.max_steps=6", "train.log_every=1", "train.eval_every=6",
        "train.eval_batch_size=32", "scheduler.warmup_steps=0"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return make_cifar10(tmp_path_factory.mktemp("cifar"), n_per_batch=64, n_test=64)


@pytest.mark.parametrize("nproc", [1, 2])
def test_trains_a_few_steps(cifar_root, tmp_path, nproc):
    args = ["train", RECIPES / "cifar10_lenet.yaml", f"data.root={cifar_root}", f"run_dir={tmp_path}", *TINY]
    run_cli(*args) if nproc == 1 else run_torchrun(2, *args, timeout=600)
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(1, 7)) and all(0 < v < 10 for v in losses.values())
    last = [r for r in read_metrics(tmp_path) if "eval/loss" in r][-1]
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert 0.0 <= last[f"eval/{name}"] <= 1.0, name
