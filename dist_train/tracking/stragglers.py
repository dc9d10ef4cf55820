"""Stragglers made visible: how long each rank takes to get ready for the step's gradient synchronisation, reduced
over ranks on log steps into `straggler/min_s`, `straggler/median_s`, `straggler/max_s` and `straggler/slowest_rank`.

Why not the step time: under data parallelism every rank waits for the slowest one in the gradient all-reduce, so
all ranks' step times are the same. What differs is the time before that wait: from the start of the step (waiting
for data included) to the start of the last micro-batch's backward, where DDP and ZeRO-1/2 synchronise. Under FSDP
and ZeRO-3 the forward already all-gathers parameters, so the figure there includes some waiting for the others.
The loop only takes two perf_counter readings per step; the gather (one small tensor per rank) happens on log
steps only, and only with more than one rank.
"""

from __future__ import annotations

import time

import torch

from dist_train import distributed


class StepReadiness:
    def __init__(self, device: torch.device):
        self.device = device
        self.enabled = distributed.world_size() > 1
        self._start = 0.0
        self.restart()

    def restart(self) -> None:
        self.total_s, self.steps = 0.0, 0

    def step_started(self) -> None:
        self._start = time.perf_counter()

    def ready(self) -> None:
        """Called right before the last micro-batch's backward (where the gradient synchronisation starts)."""
        self.total_s += time.perf_counter() - self._start
        self.steps += 1

    def collect(self) -> dict[str, float]:
        """The window's per-rank means, reduced over ranks; a collective on log steps (every rank calls it)."""
        if not self.enabled:
            return {}
        mine = torch.tensor([self.total_s / max(self.steps, 1)], dtype=torch.float64, device=self.device)
        per_rank = distributed.all_gather_rows(mine).cpu()
        self.restart()
        return {"straggler/min_s": per_rank.min().item(), "straggler/median_s": per_rank.median().item(),
                "straggler/max_s": per_rank.max().item(), "straggler/slowest_rank": int(per_rank.argmax())}
