"""`dist-train train CONFIG [key=value ...] [--print-config]`: train one run (one process, or one rank under
torchrun/srun)."""

from __future__ import annotations


def main(args) -> int:
    from dist_train.preemption import stop_signals

    stop_signals.install()  # first: a stop signal during set-up is recorded, not fatal (dist_train.preemption)
    from dist_train.config import load, to_yaml

    config = load(args.config, args.overrides)  # checked before torch is imported: mistakes cost no start-up
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    from dist_train.runner import run
    from dist_train.tracking.goodput import process_started

    try:
        result = run(config, started=process_started())  # start-up counts from the interpreter's start
    finally:
        stop_signals.ignore()  # the run is over: a late stop signal must not kill the exiting process
    from dist_train import distributed
    from dist_train.tracking.console import format_duration

    if result.preempted:
        return result.exit_code  # checkpoint saved, rank 0 said how to go on (dist_train.preemption)
    if result.complete_before:
        return 0
    skipped = f" ({result.skipped_steps} skipped: non-finite loss)" if result.skipped_steps else ""
    summary = f"done: {result.steps} steps{skipped} in {format_duration(result.elapsed_s)}, loss {result.last_loss:.4f}"
    if result.eval:
        summary += " | eval " + ", ".join(f"{k} {v:.4f}" for k, v in result.eval.items())
    distributed.print0(summary)
    return 0
