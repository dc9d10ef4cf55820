"""Per-strategy step time on the same recipe and launch: median step time of ddp, fsdp, DeepSpeed ZeRO 0-3,
2 processes under torchrun, printed as ratios to ddp.

Each run trains `recipes/mlp_regression.yaml` for --steps optimizer steps and logs the mean step time of every
window of --window steps (the runner's `step_time_s`); the first window (first-call allocation, DeepSpeed and FSDP
lazy init) is dropped and the median of the rest is the run's figure. Runs are interleaved across strategies
(ddp, fsdp, ..., ddp, fsdp, ...) so a change in machine load hits all of them alike; the reported figure is the
median over --repeats runs. What is measured is the strategy's own overhead around a tiny model (communication
pattern, wrapper hooks, engine bookkeeping), not scaling: this box has 2 cores and no GPU.

    python bench/strategies.py --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = {
    "ddp": ["strategy=ddp"],
    "fsdp": ["strategy=fsdp"],
    "zero0": ["strategy=deepspeed", "deepspeed.zero_stage=0"],
    "zero1": ["strategy=deepspeed", "deepspeed.zero_stage=1"],
    "zero2": ["strategy=deepspeed", "deepspeed.zero_stage=2"],
    "zero3": ["strategy=deepspeed", "deepspeed.zero_stage=3"],
}


def run_once(name: str, args, run_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "dist_train",
           "train", str(REPO / "recipes" / "mlp_regression.yaml"), *STRATEGIES[name],
           f"train.max_steps={args.steps}", f"train.log_every={args.window}", f"train.eval_every={10 * args.steps}",
           f"train.batch_size={args.batch_size}", f"model.hidden={args.hidden}", f"run_dir={run_dir}", *args.override]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    with open(run_dir / "metrics.jsonl") as f:
        times = [r["step_time_s"] for r in map(json.loads, f) if "step_time_s" in r]
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated; ddp is always run")
    parser.add_argument("override", nargs="*", help="extra key=value config overrides for every run")
    args = parser.parse_args()
    names = ["ddp"] + [n for n in args.strategies.split(",") if n != "ddp"]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategy {unknown[0]!r}; valid: {', '.join(STRATEGIES)}")

    times: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name in names:
                times[name].append(run_once(name, args, Path(tmp) / f"{name}_{repeat}"))
                print(f"  repeat {repeat + 1}/{args.repeats} {name}: {times[name][-1] * 1e3:.2f} ms/step",
                      file=sys.stderr, flush=True)
    ddp = statistics.median(times["ddp"])
    print(f"mlp_regression hidden={args.hidden} batch={args.batch_size}/rank, 2 processes (gloo, cpu), "
          f"{args.steps} steps, median over {args.repeats} runs")
    print(f"{'strategy':<10}{'ms/step':>10}{'ratio to ddp':>14}")
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<10}{median * 1e3:>10.2f}{median / ddp:>14.2f}")


if __name__ == "__main__":
    main()
