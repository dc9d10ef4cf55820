"""Overhead of the dist_train loop against a hand-written PyTorch loop: same model, data, batch, optimizer, schedule
and steps, run alternately in one process (or one torchrun job), median step time ratio printed.

    python bench/overhead.py                                         # single process
    torchrun --standalone --nproc-per-node 2 bench/overhead.py       # 2-process DDP (gloo on CPU)

Needs the Fashion-MNIST files (`dist-train data fetch fashion-mnist --root data`), or --data-root pointing at them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dist_train import cluster, distributed  # noqa: E402
from dist_train.config import load  # noqa: E402
from dist_train.data import seed_everything  # noqa: E402
from dist_train.runner import Trainer  # noqa: E402
from dist_train.tracking.jsonl import read_records  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "fashion_mnist_mlp.yaml"


def framework_step_time(config, env, device) -> float:
    trainer = Trainer(config, env, device)
    trainer.fit()
    trainer.release()
    if not env.is_main:
        return float("nan")  # only rank 0 writes metrics.jsonl, and only rank 0 prints the ratio
    last = [r for r in read_records(Path(config.run_dir) / "metrics.jsonl") if "step_time_s" in r][-1]
    return last["step_time_s"]


def handwritten_step_time(config, env, device) -> float:
    """What a user writes by hand: DDP if distributed, slice the epoch permutation, forward/backward/step."""
    from dist_train.recipe import resolve_recipe

    seed_everything(config.seed)
    recipe = resolve_recipe(config.recipe)(config)
    (x, y), _ = recipe.build_datasets()[0].tensors, None
    model = recipe.build_model().to(device)
    if env.is_distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    b, world, rank = config.train.batch_size, env.world_size, env.rank
    steps = config.train.max_steps
    perm = torch.randperm(len(x))
    start = time.perf_counter()
    for step in range(steps):
        offset = (step * b * world) % (len(x) - b * world)
        idx = perm[offset + rank * b: offset + (rank + 1) * b]
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    elapsed = time.perf_counter() - start
    del model, opt
    return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--run-dir", default="runs/bench_overhead", help="shared by all ranks (checkpoints need one folder)")
    args = parser.parse_args()

    env = cluster.detect()
    device = torch.device("cpu")
    distributed.init(env, device)
    config = load(CONFIG, [
        f"data.root={args.data_root}", f"run_dir={args.run_dir}", f"train.max_steps={args.steps}",
        f"train.log_every={args.steps}", f"train.eval_every={10 * args.steps}", f"train.batch_size={args.batch_size}",
        "scheduler.name=constant", "scheduler.warmup_steps=0", "optimizer.name=adamw",
        "checkpoint.resume=never",  # the runs share run_dir: each must train from scratch, not resume the last
    ])
    config.recipe = "fashion_mnist_mlp"
    framework_step_time(config, env, device)  # warm-up of both, discarded
    handwritten_step_time(config, env, device)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(framework_step_time(config, env, device))
        theirs.append(handwritten_step_time(config, env, device))
    ratio = statistics.median(o / t for o, t in zip(ours, theirs))
    ratio_of_medians = statistics.median(ours) / statistics.median(theirs)
    distributed.print0(
        f"world size {env.world_size} | {args.steps} steps x {args.repeats} repeats | batch {args.batch_size}/rank | "
        f"hand-written {statistics.median(theirs) * 1e3:.3f} ms/step | dist_train {statistics.median(ours) * 1e3:.3f} ms/step "
        f"| ratio of medians {ratio_of_medians:.3f} | median of paired ratios {ratio:.3f}"
    )
    distributed.shutdown()


if __name__ == "__main__":
    main()
