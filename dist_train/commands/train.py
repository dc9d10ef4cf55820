"""`dist-train train CONFIG [key=value ...] [--print-config]`: train one run (one process, or one rank under
torchrun/srun)."""

from __future__ import annotations


def main(args) -> int:
    from dist_train.config import load, to_yaml

    config = load(args.config, args.overrides)  # checked before torch is imported: mistakes cost no start-up
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    from dist_train.runner import run
    from dist_train.tracking.goodput import process_started

    result = run(config, started=process_started())  # start-up counts from the interpreter's start
    from dist_train import distributed
    from dist_train.tracking.console import format_duration

    if result.preempted or result.complete_before:
        return 0  # preempted: checkpoint saved (and job requeued under SLURM), see dist_train.preemption
    summary = f"done: {result.steps} steps in {format_duration(result.elapsed_s)}, loss {result.last_loss:.4f}"
    if result.eval:
        summary += " | eval " + ", ".join(f"{k} {v:.4f}" for k, v in result.eval.items())
    distributed.print0(summary)
    return 0
