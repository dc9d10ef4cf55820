"""run_dir/metrics.jsonl: one JSON object per logged step (train) or evaluation (eval/* keys), flushed per line,
each with its `step` and wall-clock `time` (ISO 8601 with the UTC offset).

Also the one reader of the file (`read_records`): resume, `dist-train plot`/`summary`, sweeps and the tests all read
it with the same rule for a torn last line.

A resumed run continues the file: records after the resumed step (logged after that checkpoint, before the
interruption) are dropped, since the resumed run logs those steps again, and a last line cut by a crash goes too."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

from dist_train.errors import RunError, UsageError
from dist_train.tracking import Tracker
from dist_train.tracking.run_record import now


class JsonlTracker(Tracker):
    def __init__(self, path: Path, resume_step: int | None = None):
        self.path, self.file = path, None
        with self._writing("while opening it"):
            if resume_step is not None and path.is_file():
                kept = [r for r in read_records(path) if r.get("step", 0) <= resume_step]
                part = path.with_name(path.name + ".part")
                part.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
                part.replace(path)
                self.file = open(path, "a", encoding="utf-8")
            else:
                self.file = open(path, "w", encoding="utf-8")

    def log(self, metrics, step):
        record = {"step": step, "time": now(), **{k: _plain(v) for k, v in metrics.items()}}
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


def read_records(path: Path, torn_tail: str = "drop") -> list[dict]:
    """The records of a metrics.jsonl, the one reader every part of dist_train uses.

    Records are appended one line at a time and flushed, so only the LAST line can be incomplete (a process killed
    mid-write). `torn_tail="drop"` leaves such a line out (resume, reports, sweeps: a run may have been killed);
    `"raise"` refuses it (tests asserting a file is whole). Any other line that is not a JSON object is damage,
    not a torn write: a UsageError naming the file and the line, whatever the policy."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last complete record
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
            continue
        if number == len(lines) and torn_tail == "drop":
            break
        raise UsageError(f"{path}: line {number} is not a JSON record: {line[:60]!r}"
                         + ("" if number < len(lines) else " (a torn last line)"))
    return records


def read_run_metrics(run_dir: str | Path) -> list[dict]:
    """The step records of a run_dir's metrics.jsonl, or a UsageError naming what is wrong with the folder."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise UsageError(f"run dir '{run_dir}' does not exist (give the run_dir of a `dist-train train` run)")
    if not path.is_file():
        raise UsageError(f"run dir '{run_dir}' has no metrics.jsonl (give the run_dir of a `dist-train train` run)")
    records = [r for r in read_records(path) if isinstance(r.get("step"), int)]
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
