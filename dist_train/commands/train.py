"""`dist-train train CONFIG [key=value ...]`: train one run (one process, or one rank under torchrun/srun)."""

from __future__ import annotations


def main(args) -> int:
    from dist_train.preemption import stop_signals

    stop_signals.install()  # first: a stop signal during set-up is recorded, not fatal (dist_train.preemption)
    from dist_train.config import load

    config = load(args.config, args.overrides)
    from dist_train.runner import run  # torch is imported only once the config is known to be valid

    try:
        result = run(config)
    finally:
        stop_signals.ignore()  # the run is over: a late stop signal must not kill the exiting process
    from dist_train import distributed

    if result.preempted:
        return result.exit_code  # checkpoint saved, rank 0 said how to go on (dist_train.preemption)
    summary = f"done: {result.steps} steps, loss {result.last_loss:.4f}"
    if result.eval:
        summary += " | eval " + ", ".join(f"{k} {v:.4f}" for k, v in result.eval.items())
    distributed.print0(summary)
    return 0
