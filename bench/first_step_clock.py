"""A callback for bench/startup.py: rank 0 prints `FIRST_STEP_DONE_AT <time.monotonic()>` once optimizer step 1
is done. In its own file so that the hand-written side of the benchmark imports nothing of dist_train's."""

from __future__ import annotations

import time

from dist_train.callbacks import Callback

MARK = "FIRST_STEP_DONE_AT"


class FirstStepClock(Callback):
    def on_step_end(self, trainer, step, metrics):
        if step == 1 and trainer.env.is_main:
            print(f"{MARK} {time.monotonic()!r}", flush=True)
