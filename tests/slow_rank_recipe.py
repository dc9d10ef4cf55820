"""mlp_regression whose forward sleeps on one rank: a straggler (`every_step_s`), a rank stuck inside its forward
for the watchdog, a window to deliver a signal in, or a forced ordering of two nodes' restarts.

The recipe does not see the step number: `step` counts this process's training forwards (1 = its first), which is
the optimizer step on a run that did not resume (grad_accum 1). With `once_file` the long sleep happens only while
that file does not exist (it is created first), so a restarted process does not sleep again. Each process appends
`rank restart_count` to run_dir/starts.txt when it builds its model: which attempts ran with which restart count.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dist_train import distributed
from dist_train.recipes.mlp_regression import MLPRegression


@dataclass
class SlowConfig:
    rank: int = 1
    step: int = 0  # this process's N-th training forward sleeps `seconds` (0: none)
    seconds: float = 0.0
    every_step_s: float = 0.0  # every training forward of `rank` sleeps this long
    once_file: str = ""


class SlowRank(MLPRegression):
    sections = {**MLPRegression.sections, "slow": SlowConfig}

    def __init__(self, config):
        super().__init__(config)
        self.forwards = 0

    def build_model(self):
        env = distributed.env()
        Path(self.config.run_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.config.run_dir) / "starts.txt", "a") as f:
            f.write(f"{env.rank} {env.restart_count}\n")
        return super().build_model()

    def forward(self, model, batch):
        cfg = self.config.section("slow")
        if model.training and distributed.env().rank == cfg.rank:
            self.forwards += 1
            if cfg.every_step_s:
                time.sleep(cfg.every_step_s)
            if self.forwards == cfg.step and not (cfg.once_file and os.path.exists(cfg.once_file)):
                if cfg.once_file:
                    Path(cfg.once_file).touch()
                # The line the watchdog must name:
                time.sleep(cfg.seconds)
        return super().forward(model, batch)
