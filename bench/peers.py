"""dist_train against its peers on the same work: a hand-written PyTorch loop, Lightning Fabric and HF Accelerate.

    python bench/peers.py --work mlp                                        # one process
    python bench/peers.py --work char_lm
    torchrun --standalone --nproc-per-node 2 bench/peers.py --work mlp      # 2-process DDP (gloo on CPU)

Every side trains the same recipe model (built after `seed_everything(seed)`), on the same samples in the same
order (dist_train's documented order, docs/data.md: `dist_train.data.epoch_order(n, seed, e)` evaluated at the
positions of each step's global batch, rank r the r-th block),
with the same AdamW and parameter groups (dist_train.optim.param_groups), the same LambdaLR schedule
(dist_train.optim.lr_multiplier) and the per-rank reseed
`seed + 1000 * (rank + 1)` before the first step; DDP (default buckets) wraps the model on 2 processes. The
losses at the log steps (mean over ranks) must be identical, bit for bit, for the hand-written loop and dist_train,
and within 1e-5 relative for Fabric and Accelerate (their gradient clipping rounds differently: on char_lm, with
train.clip_grad_norm, Fabric's loss after 150 steps differed in the 7th digit), or the benchmark stops: then the
work was not the same.

Timing is the same for every side: `time.perf_counter()` after each optimizer step (dist_train: a callback's
`on_step_end`, which runs after the loop's own per-step work, logging included); a side's figure for one repeat is
the mean step time after the first --warmup steps. The sides run interleaved in one process (one torchrun job,
one process group), their order rotated each repeat, so a change in machine load hits all of them alike; the
first round is a discarded warm-up. Printed: each side's median step time, the median of its paired ratios to
the hand-written loop (same repeat) and their range, and the load average before and after.

Fabric and Accelerate are optional: `pip install -c launch/constraints-cpu.txt -e '.[bench]'`; a side whose package
is missing is left out with a note. Data: `dist-train data fetch fashion-mnist --root data` and
`dist-train data fetch jargon --root data`, or --data-root pointing at them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dist_train import cluster, distributed  # noqa: E402
from dist_train.callbacks import Callback, CallbackList  # noqa: E402
from dist_train.config import load  # noqa: E402
from dist_train.data import epoch_order, seed_everything  # noqa: E402
from dist_train.optim import build_optimizer, lr_multiplier, param_groups  # noqa: E402
from dist_train.recipe import resolve_recipe  # noqa: E402

# The work: a recipe config and the overrides that make one repeat short, quiet and free of side work (no sampled
# text, eval only after the last step, which is outside the timed window).
WORKS = {
    "mlp": ("fashion_mnist_mlp.yaml", ["data.root={data}", "train.batch_size=64"], 300),
    "char_lm": ("char_lm.yaml", ["data.path={data}/jargon.txt", "sample.length=0", "train.early_stopping=null"], 150),
}


def work_config(work: str, steps: int, data_root: str, run_dir: str):
    """The recipe's config (its log_every too: the log steps' cost is part of the loop's), made short."""
    name, overrides, _ = WORKS[work]
    return load(REPO / "recipes" / name, [o.format(data=data_root) for o in overrides] + [
        f"train.max_steps={steps}", f"train.eval_every={10 * steps}", f"run_dir={run_dir}",
        "checkpoint.resume=never", "train.device=cpu",
    ])


def log_steps(config) -> list[int]:
    t = config.train
    return [s for s in range(1, t.max_steps + 1) if s % t.log_every == 0 or s == t.max_steps]


class Data:
    """The training tensors, built once through the recipe (the dist_train side builds its own, the same way)."""

    def __init__(self, config):
        recipe = resolve_recipe(config.recipe)(config)
        self.recipe = recipe
        train, _ = recipe.build_datasets()
        self.tensors = train.tensors

    def batch(self, step_index: int, config, env, perm_cache: dict):
        """This rank's batch of optimizer step `step_index` (0-based), in dist_train's documented order."""
        b, world = config.train.batch_size, env.world_size
        global_batch = b * world
        n = len(self.tensors[0])
        per_epoch = n // global_batch
        epoch, s = divmod(step_index, per_epoch)
        if epoch not in perm_cache:
            perm_cache.clear()
            perm_cache[epoch] = epoch_order(n, config.seed, epoch)
        start = s * global_batch + env.rank * b
        idx = torch.from_numpy(perm_cache[epoch].indices(np.arange(start, start + b, dtype=np.int64)))
        return tuple(t[idx] for t in self.tensors)


def schedule(optimizer, config):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, config.scheduler, config.train.max_steps))


def reseed_for_training(config, env) -> None:
    seed_everything(config.seed + 1000 * (env.rank + 1))


def mean_over_ranks(losses: list[torch.Tensor], world_size: int) -> list[float]:
    out = torch.stack(losses).float()
    distributed.all_reduce_(out)
    return (out / world_size).tolist()


# ---------------------------------------------------------------- the sides


def train_loop(model, optimizer, scheduler, config, env, data: Data, backward, clip_gradients):
    """The loop every side but dist_train's runs: one body, so that the sides differ only in what their library
    does inside `backward(loss)` and `clip_gradients(max_norm)` and in how it wrapped model and optimizer."""
    recipe, clip = data.recipe, config.train.clip_grad_norm
    logged = set(log_steps(config))
    reseed_for_training(config, env)
    model.train()
    perms, times, losses = {}, [], []
    for step in range(1, config.train.max_steps + 1):
        batch = data.batch(step - 1, config, env, perms)
        loss = recipe.loss(model(batch[0]), batch)
        backward(loss)
        if clip is not None:
            clip_gradients(clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
        if step in logged:
            losses.append(loss.detach())
    return times, mean_over_ranks(losses, env.world_size)


def model_and_optimizer(config, data: Data):
    """The recipe's model built after `seed_everything(seed)`, its AdamW and the LambdaLR schedule, unwrapped.
    The schedule is never handed to a library: a prepared one may step once per process per optimizer step."""
    seed_everything(config.seed)
    model = data.recipe.build_model()
    # dist_train's parameter groups (no weight decay for biases, norms, embeddings): plain torch groups.
    optimizer = build_optimizer(param_groups(model, config.optimizer), config.optimizer)
    return model, optimizer, schedule(optimizer, config)


def hand_written(config, env, data: Data):
    """What a user writes by hand."""
    model, optimizer, scheduler = model_and_optimizer(config, data)
    if env.is_distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    return train_loop(model, optimizer, scheduler, config, env, data, lambda loss: loss.backward(),
                      lambda max_norm: torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))


class StepClock(Callback):
    def __init__(self):
        super().__init__()
        self.times, self.losses = [], []

    def on_step_end(self, trainer, step, metrics):
        self.times.append(time.perf_counter())
        if metrics is not None:
            self.losses.append(metrics["loss"])


def dist_train_side(config, env, data: Data):
    from dist_train.runner import Trainer

    # Its console lines (start-up line, log steps) go to /dev/null, as into a log file: written, not shown.
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        trainer = Trainer(config, env, torch.device("cpu"))
        clock = StepClock()
        trainer.callbacks = CallbackList([*trainer.callbacks, clock])
        try:
            trainer.fit()
        finally:
            trainer.release()
    return clock.times, clock.losses


_FABRIC = None


def fabric_side(config, env, data: Data):
    global _FABRIC
    from lightning_fabric import Fabric

    if _FABRIC is None:  # one Fabric per process, as a script has
        warnings.filterwarnings("ignore", message=".*srun.*")  # Fabric's hint that SLURM's srun exists here
        _FABRIC = Fabric(accelerator="cpu", devices=env.world_size, strategy="ddp" if env.is_distributed else "auto",
                         precision="32-true")
        _FABRIC.launch()
    fabric = _FABRIC
    model, optimizer, scheduler = model_and_optimizer(config, data)
    model, optimizer = fabric.setup(model, optimizer)
    return train_loop(model, optimizer, scheduler, config, env, data, fabric.backward,
                      lambda max_norm: fabric.clip_gradients(model, optimizer, max_norm=max_norm))


_ACCELERATOR = None


def accelerate_side(config, env, data: Data):
    global _ACCELERATOR
    from accelerate import Accelerator

    if _ACCELERATOR is None:
        _ACCELERATOR = Accelerator(cpu=True)
    accelerator = _ACCELERATOR
    model, optimizer, scheduler = model_and_optimizer(config, data)
    model, optimizer = accelerator.prepare(model, optimizer)
    try:
        return train_loop(model, optimizer, scheduler, config, env, data, accelerator.backward,
                          lambda max_norm: accelerator.clip_grad_norm_(model.parameters(), max_norm))
    finally:
        accelerator.free_memory()


SIDES = {"hand-written": (hand_written, None), "dist_train": (dist_train_side, None),
         "fabric": (fabric_side, "lightning_fabric"), "accelerate": (accelerate_side, "accelerate")}


def available(names: list[str]) -> tuple[list[str], list[str]]:
    import importlib.util

    kept, missing = [], []
    for name in names:
        module = SIDES[name][1]
        (kept if module is None or importlib.util.find_spec(module) else missing).append(name)
    return kept, missing


def step_time(times: list[float], warmup: int) -> float:
    """Mean seconds per step after the first `warmup` steps."""
    return (times[-1] - times[warmup - 1]) / (len(times) - warmup)


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", choices=sorted(WORKS), default="mlp")
    parser.add_argument("--steps", type=int, help="optimizer steps per repeat (default: 300 mlp, 150 char_lm)")
    parser.add_argument("--warmup", type=int, default=20, help="first steps of each repeat left out of the timing")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, from {', '.join(SIDES)}")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--json", help="also write the per-repeat figures to this file (rank 0)")
    args = parser.parse_args()
    steps = args.steps or WORKS[args.work][2]
    if not 0 < args.warmup < steps - 1:
        parser.error(f"--warmup must be between 1 and --steps - 2, got {args.warmup}")
    sides, missing = available(args.sides.split(","))
    if sides[0] != "hand-written":
        parser.error("--sides must start with hand-written (the ratios are to it)")

    env = cluster.detect()
    distributed.init(env, torch.device("cpu"))
    load_before = load_text()
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
        # One run_dir for all ranks (checkpoints need one folder); rank 0 picks it and tells the others.
        shared = [tmp]
        if env.is_distributed:
            import torch.distributed as dist

            dist.broadcast_object_list(shared, src=0)
        config = work_config(args.work, steps, args.data_root, f"{shared[0]}/run")
        data = Data(config)
        results = {name: [] for name in sides}
        reference = None
        for repeat in range(args.repeats + 1):  # round 0: warm-up, discarded
            order = sides[repeat % len(sides):] + sides[: repeat % len(sides)]
            for name in order:
                config.run_dir = f"{shared[0]}/run_{name}_{repeat}"
                times, losses = SIDES[name][0](config, env, data)
                exact = SIDES[name][1] is None  # hand-written and dist_train: bit for bit
                if reference is None:
                    reference = (name, losses)
                elif (losses != reference[1] if exact else
                      not all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(losses, reference[1], strict=True))):
                    raise SystemExit(f"losses differ: {name} {losses} vs {reference[0]} {reference[1]}; the sides did "
                                     "not do the same work")
                if repeat:
                    results[name].append(step_time(times, args.warmup))
    distributed.print0(report(args, env, sides, missing, results, load_before, steps, reference[1]))
    if args.json and env.is_main:
        Path(args.json).write_text(json.dumps({"work": args.work, "world_size": env.world_size, "steps": steps,
                                               "warmup": args.warmup, "load_before": load_before,
                                               "load_after": load_text(), "step_time_s": results}, indent=1))
    distributed.shutdown()


def report(args, env, sides, missing, results, load_before, steps, losses) -> str:
    base = results["hand-written"]
    shown = ", ".join(f"{v:.6f}" for v in losses)
    lines = [f"work {args.work} | world size {env.world_size} | {steps} steps ({args.warmup} warm-up) x "
             f"{args.repeats} repeats | losses (identical, library sides within 1e-5): {shown}",
             "| side | median step time | median of paired ratios | range of ratios |",
             "|---|---|---|---|"]
    for name in sides:
        ratios = [t / b for t, b in zip(results[name], base, strict=True)]
        lines.append(f"| {name} | {statistics.median(results[name]) * 1e3:.3f} ms | "
                     f"{statistics.median(ratios):.3f} | {min(ratios):.3f}-{max(ratios):.3f} |")
    lines.append(f"load average (1, 5, 15 min) before {load_before}, after {load_text()}")
    if missing:
        lines.append(f"left out (package not installed): {', '.join(missing)}; pip install -c "
                     "launch/constraints-cpu.txt -e '.[bench]'")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
