"""Goodput: the share of a run's wall time spent in training steps, and where the rest went.

One attempt (one process's run, as rank 0 sees it) splits the wall time since it started (`dist-train train`: the
process's start, `process_started()`; a run started from Python: the call) into
- `startup`: start (interpreter, imports, config, recipe, process group, model, resume) to the first step;
- `data_wait`: inside steps, waiting for the next batch;
- `eval`: evaluations (every train.eval_every steps and after the last one);
- `checkpoint`: how long saves held the loop (a synchronous save whole; with checkpoint.async the copy to CPU
  memory, and waiting for the previous save to finish), and after the last step the wait until every rank's files
  are flushed;
- `train`: the rest of the loop: forward, backward, optimizer steps and the loop's own bookkeeping;
- `other`: after the last step (the recipe's on_train_end, closing the trackers).
goodput = train / wall. At each log step metrics.jsonl (and W&B) get `goodput` and `badput/<part>`, shares of the
wall time so far that add up to 1, and once more after the last step. run.json keeps each attempt's seconds
(`time_s`, updated at every checkpoint, so a killed attempt leaves what it had at its last save).

Across attempts (`run_goodput`, shown by `dist-train summary`) the wall time runs from the first attempt's start
to the last one's end, and `restarts` is what attempts lost: the time between them (queueing, relaunch, and
whatever a killed attempt did after its last record) plus the training time of steps a later attempt had to train
again because it resumed from an earlier checkpoint.
"""

from __future__ import annotations

import datetime
import os
import time

PARTS = ("startup", "data_wait", "eval", "checkpoint", "other")  # badput inside one attempt
SECONDS = ("wall", "train", *PARTS)  # what `Goodput.seconds` returns
_IMPORTED = time.perf_counter()


def process_started() -> float:
    """The `time.perf_counter()` reading at which this process started: from /proc on Linux (the interpreter and
    its imports count as start-up), elsewhere when dist_train was first imported."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name (field 2) may hold spaces
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED
    return time.perf_counter() - max(0.0, age)


class Goodput:
    """Where this process's wall time goes. The loop reports its boundaries and the time of evaluations and saves;
    the data wait is the throughput meter's count (`meter`, set while the loop runs)."""

    def __init__(self, started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.loop_started: float | None = None
        self.loop_ended: float | None = None
        self.eval_s = 0.0
        self.checkpoint_s = 0.0
        self.meter = None  # anything with a `data_wait_s` (dist_train.tracking.throughput.Throughput)

    def exclude(self, part: str, seconds: float) -> None:
        """Time the loop spent outside training steps (`part`: "eval" or "checkpoint"): counted here, and left out
        of the throughput meter's window, so step_time_s and samples_per_s measure training steps alone."""
        if part == "eval":
            self.eval_s += seconds
        else:
            self.checkpoint_s += seconds
        if self.meter is not None:
            self.meter.exclude(seconds)

    def loop_starts(self) -> None:
        self.loop_started = time.perf_counter()

    def loop_ends(self) -> None:
        self.loop_ended = time.perf_counter()

    def seconds(self) -> dict[str, float]:
        """{"wall", "train", *PARTS}: seconds since the process started; train + the parts = wall."""
        data_wait_s = self.meter.data_wait_s if self.meter is not None else 0.0
        now = time.perf_counter()
        loop_started = self.loop_started if self.loop_started is not None else now
        loop_ended = self.loop_ended if self.loop_ended is not None else now
        startup = loop_started - self.started
        other = now - loop_ended
        loop = loop_ended - loop_started
        train = max(0.0, loop - data_wait_s - self.eval_s - self.checkpoint_s)
        return {"wall": now - self.started, "train": train, "startup": startup, "data_wait": data_wait_s,
                "eval": self.eval_s, "checkpoint": self.checkpoint_s, "other": other}

    def for_record(self) -> tuple[float, dict[str, float]]:
        """(elapsed s, seconds by part) as run.json keeps them."""
        seconds = self.seconds()
        return seconds["wall"], {k: round(v, 3) for k, v in seconds.items() if k != "wall"}


def shares(seconds: dict[str, float]) -> dict[str, float]:
    """The logged figures: `goodput` and `badput/<part>` as shares of the wall time (parts that are zero too)."""
    wall = max(seconds["wall"], 1e-9)
    figures = {"goodput": seconds["train"] / wall}
    for part in (*PARTS, "restarts"):
        if part in seconds:
            figures[f"badput/{part}"] = seconds[part] / wall
    return figures


def _time(text: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def run_goodput(attempts: list[dict]) -> dict[str, float] | None:
    """Seconds over all attempts of a run (run.json): {"wall", "train", *PARTS, "restarts"}; None when no attempt
    recorded its time (runs from before dist-train recorded it)."""
    timed = [a for a in attempts if isinstance(a.get("time_s"), dict) and _time(a.get("started"))]
    if not timed:
        return None
    total = {part: 0.0 for part in ("train", *PARTS)}
    elapsed = lost = 0.0
    for i, attempt in enumerate(timed):
        for part in total:
            total[part] += float(attempt["time_s"].get(part, 0.0))
        elapsed += float(attempt.get("elapsed_s", 0.0))
        if i + 1 < len(timed):
            # The next attempt resumed from an earlier step than this one reached: those steps were trained twice.
            trained = attempt.get("last_step", 0) - attempt.get("start_step", 0)
            redone = attempt.get("last_step", 0) - timed[i + 1].get("start_step", 0)
            if trained > 0 and redone > 0:
                lost += float(attempt["time_s"].get("train", 0.0)) * min(1.0, redone / trained)
    first = _time(timed[0]["started"])
    last = timed[-1]
    end = _time(last.get("ended")) or _time(last["started"]) + datetime.timedelta(seconds=last.get("elapsed_s", 0.0))
    wall = max((end - first).total_seconds(), elapsed)
    total["train"] -= lost
    total["restarts"] = max(0.0, wall - elapsed) + lost
    total["wall"] = wall
    return total
