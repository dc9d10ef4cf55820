"""run_dir/metrics.jsonl: one JSON object per logged step (train) or evaluation (eval/* keys), flushed per line.

Also the reader that `dist-train plot` and `dist-train summary` share: it turns the file back into per-key series
and tolerates the one torn line a killed job can leave at the end.

A resumed run continues the file: records after the resumed step (logged after that checkpoint, before the
interruption) are dropped, since the resumed run logs those steps again, and a last line cut by a crash goes too."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

from dist_train.errors import RunError, UsageError
from dist_train.tracking import Tracker


class JsonlTracker(Tracker):
    def __init__(self, path: Path, resume_step: int | None = None):
        self.path, self.file = path, None
        with self._writing("while opening it"):
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
        with self._writing(f"at step {step}"):
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self):
        if self.file is None:
            return
        file, self.file = self.file, None
        try:
            file.close()
        except OSError:
            pass  # the write that failed was reported already; its buffered line is lost either way

    @contextlib.contextmanager
    def _writing(self, what: str):
        """A full disk or a vanished file system is the run's end, not a bug: one line (exit 1) saying what the
        metrics file holds. Checkpoints are written elsewhere and committed atomically, so they are intact."""
        try:
            yield
        except OSError as e:
            raise RunError(f"metrics: writing {self.path} failed {what}: {e.strerror or e}; the run stops (its "
                           "checkpoints are intact: free the space and run the same command again to resume)") from None


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no nan/inf; keep them readable instead of invalid
    return v


def read_metrics(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_run_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run_dir's metrics.jsonl, or a UsageError naming what is wrong with the folder."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise UsageError(f"run dir '{run_dir}' does not exist (give the run_dir of a `dist-train train` run)")
    if not path.is_file():
        raise UsageError(f"run dir '{run_dir}' has no metrics.jsonl (give the run_dir of a `dist-train train` run)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # the last line of a job killed mid-write
            raise UsageError(f"{path}: line {number} is not JSON: {line[:60]!r}") from None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    if not records:
        raise UsageError(f"{path}: no metrics logged yet")
    return records


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric, ordered by step; a step logged twice (a resumed job) keeps its last value."""
    by_step = {}
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            by_step[r["step"]] = float(v)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]
def _records(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a crash: it and anything after it are not trusted
    return records
