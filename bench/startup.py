"""Start-up cost: seconds from launching a fresh process to the end of its first optimizer step, dist_train
(`dist-train train`) against a hand-written script doing the same work, medians over repeated cold starts.

    python bench/startup.py                          # one process
    python bench/startup.py --nproc 2                # both under `torchrun --standalone --nproc-per-node 2`

The same work on both sides: import torch and torchvision, read Fashion-MNIST (train and test sets) through
torchvision's dataset class and normalise it, build the 784-128-64-10 MLP, AdamW, (under torchrun: a gloo process
group and DDP), one forward/backward/optimizer step on a batch of 64. dist_train also does what it always does
before its first step (config, recipe checks, checkpoint folder, run_dir files, the eval check). Each repeat
starts both (order alternating) as new processes; a process reports `time.monotonic()` (one system-wide clock on
Linux) at the end of its first step (dist_train: bench/first_step_clock.py's on_step_end), the parent subtracts
its own reading taken just before starting it. Printed: the medians, the median of paired differences, and the load.

Data: `dist-train data fetch fashion-mnist --root data`, or --data-root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "FIRST_STEP_DONE_AT"  # what bench/first_step_clock.py prints on the dist_train side


def hand_written(data_root: str) -> None:
    """What a user writes by hand, the same work as dist_train's fashion_mnist_mlp recipe up to its first step."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn

    sys.path.insert(0, str(REPO))
    from dist_train.compat.torchvision import import_torchvision  # this machine's CPU torchvision needs its shim

    tv = import_torchvision()
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        dist.init_process_group("gloo")
    sets = [tv.datasets.FashionMNIST(data_root, train=train, download=False) for train in (True, False)]
    (x, y), _ = [((ds.data.unsqueeze(1).float() / 255.0 - 0.2860) / 0.3530, ds.targets.long()) for ds in sets]
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.0), nn.Linear(128, 64),
                          nn.ReLU(), nn.Dropout(0.0), nn.Linear(64, 10))
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randperm(len(x))[:64]
    F.cross_entropy(model(x[idx]), y[idx]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if not distributed or dist.get_rank() == 0:
        print(f"{MARK} {time.monotonic()!r}", flush=True)
    if distributed:
        del model, optimizer
        dist.destroy_process_group()


def command(side: str, nproc: int, data_root: str, run_dir: str) -> list[str]:
    python = [sys.executable]
    if nproc > 1:
        python = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    if side == "hand-written":
        return [*python, str(Path(__file__).resolve()), "--child", "--data-root", data_root]
    clock = f"{Path(__file__).resolve().parent / 'first_step_clock.py'}:FirstStepClock"
    return [*python, "-m", "dist_train", "train", str(REPO / "recipes" / "fashion_mnist_mlp.yaml"),
            f"data.root={data_root}", f"run_dir={run_dir}", "checkpoint.resume=never", "train.max_steps=2",
            "train.eval_every=1000", f"callbacks=[{{name: {clock}}}]"]


def time_to_first_step(side: str, args, run_dir: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run(command(side, args.nproc, args.data_root, run_dir), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    marks = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not marks:
        raise SystemExit(f"{side} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return float(marks[0].split()[1]) - started


def load_text() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--nproc", type=int, default=1, help="processes under torchrun (1: a plain process)")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_root = str(Path(args.data_root).resolve())
    if args.child:
        hand_written(args.data_root)
        return
    import tempfile

    sides = ["hand-written", "dist_train"]
    results: dict[str, list[float]] = {side: [] for side in sides}
    load_before = load_text()
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        for repeat in range(args.repeats + 1):  # repeat 0 warms the page cache, discarded
            for side in (sides if repeat % 2 else sides[::-1]):
                seconds = time_to_first_step(side, args, f"{tmp}/run_{repeat}")
                if repeat:
                    results[side].append(seconds)
    hand, ours = results["hand-written"], results["dist_train"]
    differences = [o - h for o, h in zip(ours, hand, strict=True)]
    print(f"start-up to the end of the first optimizer step, {args.nproc} process(es), {args.repeats} repeats\n"
          f"| side | median | min-max |\n|---|---|---|\n"
          + "".join(f"| {side} | {statistics.median(v):.3f} s | {min(v):.3f}-{max(v):.3f} s |\n"
                    for side, v in results.items())
          + f"dist_train - hand-written: median of paired differences {statistics.median(differences):+.3f} s, "
          f"ratio of medians {statistics.median(ours) / statistics.median(hand):.3f}\n"
          f"load average (1, 5, 15 min) before {load_before}, after {load_text()}")


if __name__ == "__main__":
    main()
