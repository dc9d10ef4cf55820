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


# ---------------------------------------------------------------- tampering, as whoever ships a checkpoint can

class RunCommand:
    """Pickles as `os.system(command)`: unpickling it runs the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


class ThenReal:
    """Pickles as `(os.system(command), real)[1]`: unpickling runs the command, then yields the real object, so a
    reader that does not refuse it goes on as if nothing happened."""

    def __init__(self, command: str, real):
        self.command, self.real = command, real

    def __reduce__(self):
        import operator

        return (operator.getitem, ((RunCommand(self.command), self.real), 1))


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def rehash(step_dir: Path, add: tuple[str, ...] = ()) -> None:
    """Rewrite checkpoint.json's sizes and SHA-256 sums to match the files as they are now (plus `add`)."""
    import hashlib
    import json

    manifest_path = step_dir / "checkpoint.json"
    manifest = json.loads(manifest_path.read_text())
    for rel in [*manifest["files"], *add]:
        data = (step_dir / rel).read_bytes()
        manifest["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))


def plant_metadata_payload(step_dir: Path, command: str) -> None:
    """Replace .metadata with a pickle that runs `command` and then returns the real metadata; re-hash."""
    import pickle

    with open(step_dir / ".metadata", "rb") as f:
        real = pickle.load(f)  # the test's own, untampered file
    (step_dir / ".metadata").write_bytes(pickle.dumps(ThenReal(command, real)))
    rehash(step_dir)


def plant_torch_payload(step_dir: Path, name: str, command: str) -> None:
    """Replace a torch.save file (trainer_state.pt, rng_rank0.pt) with one that runs `command` when loaded with
    weights_only=False and then returns the real content; re-hash."""
    real = torch.load(step_dir / name, weights_only=True)
    torch.save(ThenReal(command, real), step_dir / name)
    rehash(step_dir)


def edit_manifest(step_dir: Path, **fields) -> None:
    import json

    path = step_dir / "checkpoint.json"
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest))
