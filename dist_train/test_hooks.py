"""Test-only fault injection: how the checkpoint tests stop or kill a real run at an exact point.

Nothing here runs unless a DIST_TRAIN_TEST_* variable is set; users never need them.
- DIST_TRAIN_TEST_STOP_AFTER_STEP=N: after optimizer step N, save a checkpoint and end the run cleanly (what a
  preemption handler does).
- DIST_TRAIN_TEST_KILL_AT=POINT:STEP[:RANK]: SIGKILL this process (no cleanup, like `kill -9`) on reaching POINT of
  STEP, on RANK only if given, and only on the launcher's first attempt (a restarted worker must not die again).
  POINT is `micro<i>` (before micro-batch i of that step) or `commit` (checkpoint shards written, not committed).
"""

from __future__ import annotations

import os
import signal

STOP_AFTER_STEP = "DIST_TRAIN_TEST_STOP_AFTER_STEP"
KILL_AT = "DIST_TRAIN_TEST_KILL_AT"


def stop_after_step() -> int | None:
    value = os.environ.get(STOP_AFTER_STEP)
    return int(value) if value else None


class KillPoint:
    def __init__(self, rank: int, restart_count: int):
        self.point, self.step = None, -1
        spec = os.environ.get(KILL_AT)
        if not spec or restart_count > 0:
            return
        point, step, *who = spec.split(":")
        if who and int(who[0]) != rank:
            return
        self.point, self.step = point, int(step)

    def reached(self, point: str, step: int) -> None:
        if step == self.step and point == self.point:
            os.kill(os.getpid(), signal.SIGKILL)
