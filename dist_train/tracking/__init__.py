"""Where metrics go. Rank 0 owns one `Trackers` fan-out; every sink receives the same (metrics, step) calls.

metrics.jsonl and the console are always on; further sinks (W&B, TensorBoard) plug in as more `Tracker`s.
"""

from __future__ import annotations

from typing import Any


class Tracker:
    def begin(self, step: int) -> None:
        """Training starts (or resumes) at `step`."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Trackers(Tracker):
    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def begin(self, step):
        for t in self.trackers:
            t.begin(step)

    def log(self, metrics, step):
        for t in self.trackers:
            t.log(metrics, step)

    def close(self):
        for t in self.trackers:
            t.close()


class NoTracker(Tracker):
    """What ranks other than 0 get: they compute the same reductions but write nothing."""

    def log(self, metrics, step):
        pass
