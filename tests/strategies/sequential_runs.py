"""Test worker: several trainings one after another in one torchrun launch.

Launching torchrun costs seconds per run here (interpreter, torch and deepspeed imports, DeepSpeed's comm op
load), far more than 10 steps of a tiny model; the equivalence matrix would be mostly start-up. This worker starts
the process group once and runs the real `Trainer` (the loop and strategies the CLI runs) for each entry of a JSON
list: {"run_dir": ..., "overrides": [...], "checkpoint_roundtrip": bool}. The CLI path itself is covered by the
end-to-end tests. With checkpoint_roundtrip the strategy saves after training; a second trainer built from another
seed loads it, and rank 0 writes the largest parameter difference before and after loading to run_dir/roundtrip.json.

Usage: torchrun --standalone --nproc-per-node 2 tests/strategies/sequential_runs.py CONFIG.yaml RUNS.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from dist_train import cluster, distributed
from dist_train.config import load
from dist_train.runner import Trainer, pick_device


def full_parameters(trainer: Trainer) -> list[torch.Tensor]:
    """Every parameter in full on every rank (gathers ZeRO-3 partitions and FSDP shards)."""
    params = list(trainer.strategy.unwrapped_model.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            return [p.detach().clone() for p in params]
    return [p.full_tensor().detach().clone() if hasattr(p, "full_tensor") else p.detach().clone() for p in params]


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


def checkpoint_roundtrip(config_path: str, overrides: list[str], trainer: Trainer, run_dir: Path, env, device):
    directory = run_dir / "checkpoint"
    trainer.strategy.save_checkpoint(directory)
    saved = full_parameters(trainer)
    other = Trainer(load(config_path, [*overrides, f"run_dir={run_dir}/other", "seed=7"]), env, device)
    try:
        before = max_difference(saved, full_parameters(other))
        other.strategy.load_checkpoint(directory)
        after = max_difference(saved, full_parameters(other))
    finally:
        other.release()
    if env.is_main:
        (run_dir / "roundtrip.json").write_text(json.dumps({"before": before, "after": after}))


def record(trainer: Trainer, run_dir: Path, env) -> None:
    groups = [{k: g.get(k) for k in ("name", "lr", "lr_scale", "weight_decay")}
              for g in trainer.strategy.optimizer.param_groups]
    if env.is_main:
        (run_dir / "param_groups.json").write_text(json.dumps(groups))
    model = trainer.strategy.unwrapped_model
    names = {n for n, _ in model.named_buffers()} & set(model.state_dict())
    buffers = {n: b.detach().clone() for n, b in model.named_buffers() if n in names}
    if buffers:
        torch.save(buffers, run_dir / f"buffers_rank{env.rank}.pt")


def main(config_path: str, runs_path: str) -> None:
    runs = json.loads(Path(runs_path).read_text())
    env = cluster.detect()
    device = pick_device("cpu", env)
    distributed.init(env, device)
    try:
        for run in runs:
            overrides = [*run["overrides"], f"run_dir={run['run_dir']}"]
            trainer = Trainer(load(config_path, overrides), env, device)
            try:
                trainer.fit()
                record(trainer, Path(run["run_dir"]), env)
                if run.get("checkpoint_roundtrip"):
                    checkpoint_roundtrip(config_path, overrides, trainer, Path(run["run_dir"]), env, device)
            finally:
                trainer.release()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
