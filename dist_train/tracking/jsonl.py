"""run_dir/metrics.jsonl: one JSON object per logged step (train) or evaluation (eval/* keys), flushed per line."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dist_train.tracking import Tracker


class JsonlTracker(Tracker):
    def __init__(self, path: Path):
        self.file = open(path, "w", encoding="utf-8")

    def log(self, metrics, step):
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no nan/inf; keep them readable instead of invalid
    return v


def read_metrics(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
