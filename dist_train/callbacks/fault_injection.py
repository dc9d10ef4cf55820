"""Fault injection for tests: stop or kill a real run at an exact point, to prove exact resume and atomic saves.

Configured in YAML (`callbacks: [{name: fault_injection, stop_after_step: 17}]`) or, for a test that launches the
real CLI, by environment variables (then added after every other callback):
- DIST_TRAIN_TEST_STOP_AFTER_STEP=N / `stop_after_step`: after optimizer step N, save a checkpoint and end the run
  cleanly (what a preemption handler does).
- DIST_TRAIN_TEST_KILL_AT=POINT:STEP[:RANK] / `kill_at`: SIGKILL this process (no cleanup, like `kill -9`) on
  reaching POINT of STEP, on RANK only if given, and only on the launcher's first attempt (a restarted worker must
  not die again). POINT is `micro<i>` (before micro-batch i of that step) or `commit` (every rank's checkpoint files
  written, the checkpoint not committed yet).
Users never need it.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

from dist_train.callbacks import Callback
from dist_train.config.schema import positive
from dist_train.errors import UsageError

STOP_AFTER_STEP = "DIST_TRAIN_TEST_STOP_AFTER_STEP"
KILL_AT = "DIST_TRAIN_TEST_KILL_AT"
_KILL_SPEC = re.compile(r"(micro\d+|commit):(\d+)(?::(\d+))?")


@dataclass
class FaultInjectionConfig:
    stop_after_step: int | None = positive(None)
    kill_at: str | None = None  # POINT:STEP[:RANK], POINT = micro<i> | commit


class FaultInjection(Callback):
    Config = FaultInjectionConfig

    def __init__(self, config: FaultInjectionConfig, key: str = "callbacks.fault_injection"):
        super().__init__(config)
        self.kill = None  # (point, step, rank or None)
        if config.kill_at is not None:
            m = _KILL_SPEC.fullmatch(config.kill_at)
            if not m:
                raise UsageError(f"{key}.kill_at: '{config.kill_at[:60]}' is not POINT:STEP[:RANK] with POINT "
                                 "micro<i> or commit, e.g. micro1:18 or commit:20:1")
            self.kill = (m.group(1), int(m.group(2)), int(m.group(3)) if m.group(3) else None)

    @classmethod
    def from_environment(cls) -> FaultInjection | None:
        stop, kill = os.environ.get(STOP_AFTER_STEP), os.environ.get(KILL_AT)
        if not stop and not kill:
            return None
        if stop and not stop.isdigit():
            raise UsageError(f"{STOP_AFTER_STEP}: expected a step number, got '{stop[:60]}'")
        return cls(FaultInjectionConfig(int(stop) if stop else None, kill or None), key=KILL_AT)

    def setup(self, trainer) -> None:
        if self.kill is not None:
            _, _, rank = self.kill
            if trainer.env.restart_count > 0 or (rank is not None and rank != trainer.env.rank):
                self.kill = None

    def _maybe_kill(self, point: str, step: int) -> None:
        if self.kill is not None and self.kill[:2] == (point, step):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_micro_batch_start(self, trainer, step, index) -> None:
        self._maybe_kill(f"micro{index}", step)

    def before_checkpoint_commit(self, trainer, step, directory) -> None:
        self._maybe_kill("commit", step)

    def on_step_end(self, trainer, step, metrics) -> None:
        if step == self.config.stop_after_step:
            trainer.request_stop(f"test: stop after step {step}")
