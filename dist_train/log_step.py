"""What the loop computes on a log step, and how often ranks agree on a preemption signal.

A log step needs four kinds of cross-rank reduction: the first non-finite step (MIN, train.on_nan=stop), the
loss (SUM, then the mean), the throughput window (MAX of times and memory, SUM of tokens) and rank 0's goodput
seconds (so that every rank logs, and hands its callbacks, the same figures). `log_step_figures` packs them into
one vector and makes ONE collective of it (dist_train.distributed.reduce_columns): under DDP on gloo each
blocking collective of a few numbers costs a network round trip (~1 ms on the 2-core CI box), three per log step
before; with the default train.log_every=10 that was ~6% of a 5 ms DDP step.

The log step also measures the step time every rank agrees on (the slowest rank's), from which
`stop_check_every` sets how many steps pass between two preemption agreements.
"""

from __future__ import annotations

import torch

from dist_train import distributed
from dist_train.tracking.goodput import SECONDS, shares

# Preemption agreement: about every STOP_CHECK_S of training, at least every STOP_CHECK_MAX_STEPS steps.
STOP_CHECK_S = 0.25
STOP_CHECK_MAX_STEPS = 100


def log_step_figures(step_loss: torch.Tensor, first_bad: torch.Tensor, meter, goodput,
                     device: torch.device, world_size: int) -> tuple[float, dict[str, float]]:
    """(first non-finite step of any rank, inf if none; {"loss", throughput figures, goodput shares}), the same on
    every rank; a collective. `step_loss`: this rank's (dist_train.token_weighted.StepLoss.finish); `first_bad`:
    this rank's, from dist_train.divergence."""
    seconds = goodput.seconds()
    local = torch.cat([
        torch.stack([first_bad, step_loss.double()]),
        torch.tensor([*meter.local(), *(seconds[k] for k in SECONDS)], dtype=torch.float64, device=device),
    ])
    ops = ("min", "sum", *meter.REDUCE, *("first",) * len(SECONDS))
    first_bad_step, loss_sum, *reduced = distributed.reduce_columns(local, ops)
    # Summed in float64 and rounded to float32 once: for two ranks exactly what a float32 all-reduce gives.
    loss = (torch.tensor(loss_sum, dtype=torch.float32) / world_size).item()
    figures = {"loss": loss, **meter.figures(reduced[: len(meter.REDUCE)]),
               **shares(dict(zip(SECONDS, reduced[len(meter.REDUCE):], strict=True)))}
    return first_bad_step, figures


def stop_check_every(step_time_s: float, world_size: int) -> int:
    """Steps between two preemption agreements (dist_train.preemption). One process: every step (it only reads a
    flag). Several: the agreement is an all-reduce on its own gloo group, which on the 2-core CI box cost ~10% of a
    5 ms DDP step when made every step (the gloo thread's CPU time); about every 0.25 s it costs ~0.1%. A signal
    is acted on at most two agreements after it arrives (the flags sent at one are read at the next): within
    ~0.5 s of training plus two steps, and never more than 2 x 100 + 1 steps; SLURM's warning (slurm/*.sbatch:
    USR1 120 s before the limit) leaves the checkpoint nearly all of its time. `step_time_s` is the slowest
    rank's, reduced at the log step, so every rank computes the same number and they agree at the same steps."""
    if world_size == 1 or not step_time_s > 0:
        return 1
    return max(1, min(STOP_CHECK_MAX_STEPS, int(STOP_CHECK_S / step_time_s)))
