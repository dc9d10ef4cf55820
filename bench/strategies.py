"""Per-strategy step time on the same recipe: ddp, fsdp and DeepSpeed ZeRO 0-3 in one 2-process torchrun job,
median step time printed as ratios to ddp.

    torchrun --standalone --nproc-per-node 2 bench/strategies.py --steps 200 --repeats 5

As bench/peers.py does, the trainings run one after another inside one job (one process group, DeepSpeed
imported once), interleaved across strategies (ddp, fsdp, ..., ddp, fsdp, ...) so a change in machine load hits all
of them alike. Each training logs the mean step time of every window of --window steps (the runner's
`step_time_s`); the first window (first-call allocation, FSDP's lazy init, DeepSpeed's first step) is dropped and
the median of the rest is that training's figure; a strategy's figure is the median over --repeats trainings.
The recipe is the generated regression (no data files needed), widened by --hidden. On a CPU box this measures
each strategy's own overhead (collectives per step, wrapper hooks, engine bookkeeping), not scaling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dist_train import cluster, distributed  # noqa: E402
from dist_train.config import load  # noqa: E402
from dist_train.runner import Trainer  # noqa: E402
from dist_train.tracking.jsonl import read_records  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "mlp_regression.yaml"
STRATEGIES = {
    "ddp": ["strategy=ddp"],
    "fsdp": ["strategy=fsdp"],
    "zero0": ["strategy=deepspeed", "deepspeed.zero_stage=0"],
    "zero1": ["strategy=deepspeed", "deepspeed.zero_stage=1"],
    "zero2": ["strategy=deepspeed", "deepspeed.zero_stage=2"],
    "zero3": ["strategy=deepspeed", "deepspeed.zero_stage=3"],
}


def step_time(overrides: list[str], run_dir: Path, env, device) -> float:
    trainer = Trainer(load(CONFIG, [*overrides, f"run_dir={run_dir}"]), env, device)
    try:
        trainer.fit()
    finally:
        trainer.release()
    if not env.is_main:
        return 0.0  # only rank 0 writes metrics; only rank 0 prints the table
    times = [r["step_time_s"] for r in read_records(run_dir / "metrics.jsonl") if "step_time_s" in r]
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--run-dir", default="runs/bench_strategies",
                        help="shared by all ranks (a checkpoint is one folder every rank writes into)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated; ddp always runs")
    args = parser.parse_args()
    names = ["ddp"] + [n for n in args.strategies.split(",") if n != "ddp"]
    if unknown := [n for n in names if n not in STRATEGIES]:
        parser.error(f"unknown strategy {unknown[0]!r}; valid: {', '.join(STRATEGIES)}")

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    env = cluster.detect()
    if env.world_size != 2:
        sys.exit("run under torchrun with 2 processes: torchrun --standalone --nproc-per-node 2 bench/strategies.py")
    device = torch.device("cpu")
    distributed.init(env, device)
    common = [f"train.max_steps={args.steps}", f"train.log_every={args.window}", f"train.eval_every={10 * args.steps}",
              f"train.batch_size={args.batch_size}", f"model.hidden={args.hidden}",
              "checkpoint.resume=never"]  # a rerun of the bench must train again, not resume the last one
    times: dict[str, list[float]] = {n: [] for n in names}
    for repeat in range(args.repeats):
        for name in names:
            run_dir = Path(args.run_dir) / f"{name}_{repeat}"
            times[name].append(step_time([*common, *STRATEGIES[name]], run_dir, env, device))
    ddp = statistics.median(times["ddp"]) or 1.0  # 0 on ranks other than 0, which print nothing
    distributed.print0(f"mlp_regression hidden={args.hidden}, batch {args.batch_size}/rank, 2 processes (gloo, cpu), "
                       f"{args.steps} steps, median over {args.repeats} trainings")
    distributed.print0(f"{'strategy':<10}{'ms/step':>10}{'ratio to ddp':>14}")
    for name in names:
        median = statistics.median(times[name])
        distributed.print0(f"{name:<10}{median * 1e3:>10.2f}{median / ddp:>14.2f}")
    distributed.shutdown()


if __name__ == "__main__":
    main()
