"""run_dir/run.json: what a run is and how each of its attempts ended, for people and for `dist-train summary`.

metrics.jsonl says how training went; this file says what ran and whether it is finished: the strategy actually
used (as the start-up line describes it), world size, batch layout, and for each attempt (a first launch, a
resume, a requeue) its start and end time, first and last step and how it ended: `complete` (train.max_steps
reached), `stopped early` (a callback ended it for good, e.g. early stopping), `preempted` / `interrupted`
(checkpoint saved, resume with the same command), `failed` (with the error line), and its seconds by part
(`time_s`: start-up, training, data wait, eval, checkpoint stalls; dist_train.tracking.goodput), updated at each
checkpoint. An attempt still `running` in the file either runs now or died without a word (SIGKILL, a node lost).
An attempt's start is its process's start, so start-up is inside it. Rank 0 writes it, atomically; the progress
updates at each checkpoint in a background thread (the rename that makes the write atomic costs ~1-4 ms on ext4,
which replaces a file's blocks at the rename: that was part of every save's stall).
"""

from __future__ import annotations

import datetime
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

RUN_RECORD = "run.json"


def now(seconds_ago: float = 0.0) -> str:
    """Local wall-clock time (`seconds_ago` earlier) with its UTC offset, to the millisecond (ISO 8601)."""
    moment = datetime.datetime.now().astimezone()
    if seconds_ago:
        moment -= datetime.timedelta(seconds=seconds_ago)
    return moment.isoformat(timespec="milliseconds")


def read(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class RunRecord:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RUN_RECORD
        self.data = read(run_dir)
        if not isinstance(self.data.get("attempts"), list):
            self.data["attempts"] = []
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def start(self, start_step: int, started_s_ago: float = 0.0, **facts: Any) -> None:
        """A new attempt; `started_s_ago`: how long ago its process started (start-up is part of the attempt)."""
        self.data.update(facts)
        self.data["attempts"].append({"started": now(started_s_ago), "start_step": start_step, "status": "running"})
        self._write()

    def update(self, last_step: int, elapsed_s: float, time_s: dict[str, float]) -> None:
        """The running attempt's progress (at each checkpoint): what a killed attempt leaves behind."""
        self.data["attempts"][-1].update({"last_step": last_step, "elapsed_s": round(elapsed_s, 3), "time_s": time_s})
        text = self._text()  # the state now; the write follows in the background, one at a time, in order
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dist_train run.json")
        self._pending = self._writer.submit(self._write_progress, text)

    def _write_progress(self, text: str) -> None:
        try:
            self._write(text)
        except OSError:
            # Progress only: a full disk must not end the run, with a traceback, after a good checkpoint;
            # metrics.jsonl's next write says it in one line, and the next update or the end writes it again.
            pass

    def flush(self) -> None:
        """Wait for the last progress update to be written (start and end do, before they write)."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def end(self, status: str, last_step: int, elapsed_s: float, detail: str = "",
            time_s: dict[str, float] | None = None) -> None:
        """`time_s`: the attempt's seconds by part (dist_train.tracking.goodput)."""
        attempt = self.data["attempts"][-1]
        attempt.update({"ended": now(), "last_step": last_step, "status": status, "elapsed_s": round(elapsed_s, 3)})
        if time_s is not None:
            attempt["time_s"] = time_s
        if detail:
            attempt["detail"] = detail
        self._write()
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None

    def _text(self) -> str:
        return json.dumps(self.data, indent=1) + "\n"

    def _write(self, text: str | None = None) -> None:
        if text is None:  # start and end: after any progress update still being written, never under it
            self.flush()
            text = self._text()
        part = self.path.with_name(self.path.name + ".part")
        part.write_text(text, encoding="utf-8")
        os.replace(part, self.path)
