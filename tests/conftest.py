"""Shared fixtures. `support.py` beside this file holds the helpers tests import (generated data, CLI runners)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import PREEMPTIBLE_RUN, RECIPES, TINY_RUN, make_fashion_mnist, run_torchrun, train_losses  # noqa: E402


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """A tiny Fashion-MNIST in the real idx format (never the Debian data), shared by the session's tests."""
    root = tmp_path_factory.mktemp("fashion")
    make_fashion_mnist(root, n_train=512, n_test=128)
    return root


@pytest.fixture(scope="session")
def torchrun_2proc_losses(fashion_root, tmp_path_factory) -> dict[int, float]:
    """The reference every launcher's run must reproduce step for step: per-step losses of plain
    `torchrun --standalone --nproc-per-node 2` on support.TINY_RUN."""
    run_dir = tmp_path_factory.mktemp("torchrun_2proc")
    run_torchrun(2, "train", RECIPES / "fashion_mnist_mlp.yaml", f"data.root={fashion_root}", f"run_dir={run_dir}",
                 *TINY_RUN)
    return train_losses(run_dir)


@pytest.fixture(scope="session")
def uninterrupted_losses(fashion_root, tmp_path_factory) -> dict[int, float]:
    """What a preempted-and-resumed run must reproduce: PREEMPTIBLE_RUN under torchrun, 2 processes, no signal."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_torchrun(2, "train", RECIPES / "fashion_mnist_mlp.yaml", f"data.root={fashion_root}", f"run_dir={run_dir}",
                 *PREEMPTIBLE_RUN)
    return train_losses(run_dir)


@pytest.fixture(scope="session")
def tracked_runs(tmp_path_factory) -> list[Path]:
    """Two short real CLI runs of the regression recipe with TensorBoard on (tracking and report tests)."""
    from support import run_cli

    root = tmp_path_factory.mktemp("tracked")
    runs = []
    for name, lr in (("lr_low", 1e-3), ("lr_high", 1e-2)):
        run_dir = root / name
        run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", "train.max_steps=20",
                "train.log_every=5", "train.eval_every=10", f"optimizer.lr={lr}", "tracking.tensorboard=true")
        runs.append(run_dir)
    return runs
