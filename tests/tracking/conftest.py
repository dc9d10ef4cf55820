"""Runs shared by the tracking tests: two short real CLI runs of the regression recipe with TensorBoard on."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import RECIPES, run_cli


@pytest.fixture(scope="session")
def tracked_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("tracked")
    runs = []
    for name, lr in (("lr_low", 1e-3), ("lr_high", 1e-2)):
        run_dir = root / name
        run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", "train.max_steps=20",
                "train.log_every=5", "train.eval_every=10", f"optimizer.lr={lr}", "tracking.tensorboard=true")
        runs.append(run_dir)
    return runs
