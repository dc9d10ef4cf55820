"""Helpers for the checkpoint tests: one small mlp_regression setup (a few seconds per run), real CLI/torchrun
processes, and readers of checkpoint contents that do not go through dist_train."""

from __future__ import annotations

from pathlib import Path

import torch

from support import RECIPES, run_cli, run_torchrun, train_losses

# 200 samples, global batch 16: 12 steps per epoch, so step 17 is in the middle of the second epoch.
SMALL = [
    "train.max_steps=30", "train.log_every=1", "train.eval_every=1000", "scheduler.warmup_steps=5",
    "dataset.n_train=200", "dataset.n_eval=32", "dataset.in_features=8", "model.hidden=16", "checkpoint.every=5",
]


def train(run_dir: Path, *extra: str, nproc: int = 1, check: bool = True, torchrun_args=(), **env):
    args = ["train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", *SMALL, *extra]
    if nproc == 1:
        return run_cli(*args, check=check, **env)
    return run_torchrun(nproc, *args, check=check, torchrun_args=torchrun_args, **env)


def checkpoint_tensors(step_dir: Path, tmp: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a DCP checkpoint (model and optimizer), read by DCP's own converter, not by dist_train."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp / f"{step_dir.parent.parent.name}_{step_dir.name}.pt"
    dcp_to_torch_save(step_dir, out)
    flat = {}

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            flat[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)

    walk("", torch.load(out, weights_only=True))
    return flat


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def losses(run_dir: Path) -> dict[int, float]:
    return train_losses(run_dir)
