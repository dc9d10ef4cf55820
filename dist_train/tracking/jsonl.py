"""run_dir/metrics.jsonl: one JSON object per logged step (train) or evaluation (eval/* keys), flushed per line.

A resumed run continues the file: records after the resumed step (logged after that checkpoint, before the
interruption) are dropped, since the resumed run logs those steps again, and a last line cut by a crash goes too."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dist_train.tracking import Tracker


class JsonlTracker(Tracker):
    def __init__(self, path: Path, resume_step: int | None = None):
        if resume_step is not None and path.is_file():
            kept = [r for r in _records(path) if r.get("step", 0) <= resume_step]
            part = path.with_name(path.name + ".part")
            part.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            part.replace(path)
            self.file = open(path, "a", encoding="utf-8")
        else:
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


def _records(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a crash: it and anything after it are not trusted
    return records
