"""Worker for test_hashing.py under torchrun: saves and resumes through the real Checkpointer on 2 ranks and
records which checkpoint files each rank opens for reading, then rank 0 prints one JSON line of what it saw."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import torch

from dist_train import cluster, distributed
from dist_train.checkpoint import Checkpointer, Manifest
from dist_train.config.schema import CheckpointConfig
from dist_train.train_state import TrainState

opened: list[str] = []
_real_open = io.open


def _spy(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and "r" in mode and "+" not in mode:
        opened.append(os.fspath(file))
    return _real_open(file, mode, *args, **kwargs)


builtins.open = io.open = _spy  # pathlib and DCP open files through io.open


class DCPWriting:
    """Each rank writes its own 1 MB tensor through DCP (as the torch strategies do), rank 0 the trainer state."""

    name = "ddp"

    def __init__(self, rank: int):
        self.rank, self.state = rank, {f"w{rank}": torch.full((1 << 18,), float(rank))}

    def save_checkpoint(self, target):
        import torch.distributed.checkpoint as dcp

        if self.rank == 0:
            target.put("strategy_state.pt", {"scheduler": {}})
        dcp.save(self.state, storage_writer=target.dcp_writer())


class SelfWriting:
    """Writes its files itself (as DeepSpeed does): the checkpointer hashes them afterwards, split across ranks."""

    name = "deepspeed"

    def __init__(self, rank: int):
        self.rank = rank

    def save_checkpoint(self, target):
        torch.save(torch.full((1 << 18,), float(self.rank)), Path(target.location) / f"own_{self.rank}.pt")


def main(root: Path) -> None:
    env = cluster.detect()
    distributed.init(env, torch.device("cpu"))
    report = {}
    for step, strategy in ((1, DCPWriting(env.rank)), (2, SelfWriting(env.rank))):
        manifest = Manifest(step=step, recipe="test", model={"w": [1]}, world_size=2, batch_size=1, grad_accum=1,
                            global_batch=2, strategy=strategy.name, config={})
        checkpointer = Checkpointer(CheckpointConfig(keep=None), root, env)
        opened.clear()
        checkpointer.save(step, strategy, TrainState(step=step), manifest)
        checkpointer.close()
        report[f"save{step}"] = sorted(Path(p).name for p in opened if p.startswith(str(root)))
    opened.clear()
    found = Checkpointer(CheckpointConfig(resume=f"{root}/step_1"), root, env).find_resume()
    report["verify"] = sorted(Path(p).name for p in opened if p.startswith(str(root)))
    reports = [None] * env.world_size
    torch.distributed.all_gather_object(reports, report)
    if env.is_main:
        actual = {}
        for step in (1, 2):
            folder = root / f"step_{step}"
            for p in folder.rglob("*"):
                if p.is_file() and p.name != "checkpoint.json":
                    data = _real_open(p, "rb").read()
                    actual[f"{step}/{p.name}"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        listed = {f"{s}/{rel}": d for s in (1, 2)
                  for rel, d in json.loads(_real_open(root / f"step_{s}" / "checkpoint.json").read())["files"].items()}
        print(json.dumps({"ranks": reports, "actual": actual, "listed": listed, "resumed": found.step}), flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
