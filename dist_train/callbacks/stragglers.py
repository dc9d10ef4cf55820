"""Stragglers made visible: how long each rank takes to get ready for the step's gradient synchronisation, reduced
over ranks on log steps into `straggler/min_s`, `straggler/median_s`, `straggler/max_s` and `straggler/slowest_rank`
(a record of its own in metrics.jsonl and W&B, at the log step; with more than one rank only).

Why not the step time: under data parallelism every rank waits for the slowest one in the gradient all-reduce, so
all ranks' step times are the same. What differs is the time before that wait: from the start of the step (waiting
for data included) to the end of the step's last forward, after which DDP and ZeRO-1/2 synchronise in the backward.
Under FSDP and ZeRO-3 the forward already all-gathers parameters, so there the figure includes some waiting for the
others (and DDP's second forward rebuilds its gradient buckets with a broadcast, once). Cost: a forward hook and
two perf_counter readings per step; the gather (one number per rank, one collective) happens on log steps only.
"""

from __future__ import annotations

import time

import torch

from dist_train import distributed
from dist_train.callbacks import Callback


class Stragglers(Callback):
    def __init__(self):
        super().__init__()
        self.enabled = False
        self.step_start = self.ready_at = 0.0
        self.total_s, self.steps = 0.0, 0

    def setup(self, trainer) -> None:
        self.enabled = trainer.env.world_size > 1
        if self.enabled:
            trainer.strategy.model.register_forward_hook(self._forward_done)

    def _forward_done(self, module, args, output) -> None:
        if module.training:  # not evaluation
            self.ready_at = time.perf_counter()

    def on_step_start(self, trainer, step: int) -> None:
        self.step_start = time.perf_counter()

    def on_step_end(self, trainer, step: int, metrics) -> None:
        if not self.enabled:
            return
        self.total_s += max(self.ready_at - self.step_start, 0.0)
        self.steps += 1
        if metrics is not None:  # a log step, on every rank alike: reduce the window's per-rank means
            trainer.trackers.log(self.collect(trainer.device), step)

    def collect(self, device: torch.device) -> dict[str, float]:
        mine = torch.tensor([self.total_s / max(self.steps, 1)], dtype=torch.float64, device=device)
        per_rank = distributed.gather_row(mine).view(-1).cpu()
        self.total_s, self.steps = 0.0, 0
        return {"straggler/min_s": per_rank.min().item(), "straggler/median_s": per_rank.median().item(),
                "straggler/max_s": per_rank.max().item(), "straggler/slowest_rank": int(per_rank.argmax())}
