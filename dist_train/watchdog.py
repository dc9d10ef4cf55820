"""Hangs named, not waited out: when no progress is made for `watchdog.timeout_s`, every rank writes where it is and
the job ends, instead of sitting in a collective until `distributed.timeout_s` (or forever, if one rank sleeps).

Progress is a beat from the loop (dist_train.callbacks.watchdog: each micro-batch, optimizer step and checkpoint
save); the watchdog arms after the first optimizer step, so compilation and data-loader start-up are not timed.
A monitor thread checks the time since the last beat. When it passes the timeout, the rank
- writes run_dir/hang/rank<R>.txt: the Python stacks of all its threads, the loop's own record of what it entered
  last, and the collectives it entered last from torch's flight recorder (gloo and NCCL both record into it in
  torch 2.13 once TORCH_FR_BUFFER_SIZE is set before the process group exists: `enable_flight_recorder`);
- posts a short report to the rendezvous store, a side channel that works while the process group is stuck;
- rank 0 (or, if rank 0 cannot, the first rank to claim it) collects the reports and prints one summary line naming
  the rank(s) behind (fewest collectives entered, then least progress) and the line each is on;
- exits with EXIT_CODE, so that torchrun (`--max-restarts`) or the scheduler restarts the job from its checkpoint.
A rank stuck holding the GIL (in C code that does not release it) cannot run the monitor thread: its report is
missing, and the summary says so, which names it too.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

EXIT_CODE = 124  # as coreutils' `timeout`: the run ended because something took too long
FLIGHT_RECORDER_ENTRIES = "2000"
REPORT_KEY = "dist_train/watchdog/rank"
SUMMARY_KEY = "dist_train/watchdog/summary"


def enable_flight_recorder() -> None:
    """Before the process group is created: let torch keep its record of the last collectives (a ring buffer)."""
    os.environ.setdefault("TORCH_FR_BUFFER_SIZE", FLIGHT_RECORDER_ENTRIES)


class Watchdog:
    def __init__(self, timeout_s: float | None, run_dir: Path, rank: int, world_size: int, store=None,
                 collect_s: float = 10.0):
        self.timeout_s, self.run_dir, self.rank, self.world_size = timeout_s, Path(run_dir), rank, world_size
        self.store, self.collect_s = store, collect_s
        self.record: collections.deque = collections.deque(maxlen=20)  # (wall time, step, what)
        self.step = 0  # last optimizer step completed
        self.last_beat = time.monotonic()
        self.armed = False
        self._armed_before_pause = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ called by the loop (cheap: no I/O)

    def beat(self, what: str, step: int | None = None) -> None:
        self.last_beat = time.monotonic()
        self.record.append((time.time(), self.step + 1 if step is None else step, what))

    def pause(self) -> None:
        self._armed_before_pause, self.armed = self.armed, False

    def resume(self, what: str) -> None:
        self.beat(what)
        self.armed = self._armed_before_pause

    def step_done(self, step: int) -> None:
        self.step = step
        self.armed = True
        self.beat("optimizer step done", step)

    def start(self) -> None:
        if self.timeout_s is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="dist-train-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ the monitor thread

    def _watch(self) -> None:
        interval = min(1.0, self.timeout_s / 4)
        while not self._stop.wait(interval):
            if self.armed and time.monotonic() - self.last_beat > self.timeout_s:
                self._fire()

    def _fire(self) -> None:
        idle = time.monotonic() - self.last_beat
        report = self._report(idle)
        path = self.run_dir / "hang" / f"rank{self.rank}.txt"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self._dump(idle, report))
        except OSError as e:
            report["where"] += f" (could not write {path}: {e.strerror})"
        reports = self._exchange(report)
        if self._claim_summary():
            print(summary(reports, self.world_size, self.timeout_s, idle, path.parent), file=sys.stderr, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_CODE)  # the main thread may be inside a collective that never returns

    def _report(self, idle: float) -> dict:
        main = sys._current_frames().get(threading.main_thread().ident)
        last = self.record[-1] if self.record else (0, self.step, "start")
        collective = last_collective()
        return {"rank": self.rank, "step": last[1], "doing": last[2], "where": where(main),
                "collectives": collective[0], "last_collective": collective[1], "idle_s": round(idle, 1)}

    def _dump(self, idle: float, report: dict) -> str:
        lines = [f"dist-train watchdog: rank {self.rank} of {self.world_size} ({socket.gethostname()}, pid "
                 f"{os.getpid()}): no progress for {idle:.1f} s (watchdog.timeout_s={self.timeout_s:g})",
                 f"last optimizer step completed: {self.step}; now: step {report['step']}, {report['doing']}",
                 f"main thread at: {report['where']}", "", "the loop's record (newest last):"]
        lines += [f"  {time.strftime('%H:%M:%S', time.localtime(t))}.{int(t % 1 * 1000):03d}  step {s}: {what}"
                  for t, s, what in self.record]
        lines += ["", "collectives entered (torch flight recorder, newest last):"]
        lines += [f"  {e}" for e in flight_recorder_lines()] or ["  (flight recorder off or empty)"]
        lines += ["", "python stacks of all threads:"]
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            lines.append(f"thread {names.get(ident, ident)}:")
            lines += ["  " + line for line in "".join(traceback.format_stack(frame)).rstrip().splitlines()]
        return "\n".join(lines) + "\n"

    def _exchange(self, report: dict) -> dict[int, dict]:
        """Post this rank's report; return every report that arrives within `collect_s` (rank -> report)."""
        if self.store is None or self.world_size == 1:
            return {self.rank: report}
        try:
            self.store.set(f"{REPORT_KEY}{self.rank}", json.dumps(report))
        except Exception:  # noqa: BLE001 - the store may be gone with a dead rank 0; this rank still reports itself
            return {self.rank: report}
        keys = [f"{REPORT_KEY}{r}" for r in range(self.world_size)]
        deadline = time.monotonic() + self.collect_s
        while time.monotonic() < deadline:
            try:
                if self.store.check(keys):
                    break
            except Exception:  # noqa: BLE001
                break
            time.sleep(0.2)
        reports = {}
        for r, key in enumerate(keys):
            try:
                if self.store.check([key]):
                    reports[r] = json.loads(self.store.get(key))
            except Exception:  # noqa: BLE001
                pass
        reports[self.rank] = report
        return reports

    def _claim_summary(self) -> bool:
        """One summary for the job: rank 0's, or the first other rank's if rank 0 has not printed it 2 s later."""
        if self.store is None or self.world_size == 1:
            return True
        if self.rank != 0:
            time.sleep(2.0)
        try:
            return self.store.add(SUMMARY_KEY, 1) == 1
        except Exception:  # noqa: BLE001
            return True


def where(frame) -> str:
    """The innermost frame outside torch's own code, as 'file:line in function: source'."""
    if frame is None:
        return "unknown (no main thread frame)"
    stack = traceback.extract_stack(frame)
    outside = [f for f in stack if f"{os.sep}torch{os.sep}" not in f.filename] or stack
    f = outside[-1]
    return f"{_short(f.filename)}:{f.lineno} in {f.name}: {(f.line or '').strip()}"


def _short(filename: str) -> str:
    try:
        return os.path.relpath(filename)
    except ValueError:
        return filename


def _flight_recorder() -> dict:
    try:
        import torch._C._distributed_c10d as c10d

        return json.loads(c10d._dump_fr_trace_json(True, True))
    except Exception:  # noqa: BLE001 - private API: absent, or recorder off -> no collective record
        return {}


def last_collective() -> tuple[int, str]:
    """(collectives this rank entered on the default process group, name of the last one), or (-1, '')."""
    entries = [e for e in _flight_recorder().get("entries", []) if e.get("pg_id", 0) == 0]
    if not entries:
        return -1, ""
    last = entries[-1]
    return int(last.get("collective_seq_id", -1)), str(last.get("profiling_name", ""))


def flight_recorder_lines(n: int = 12) -> list[str]:
    out = []
    for e in _flight_recorder().get("entries", [])[-n:]:
        out.append(f"process group {e.get('pg_id')} #{e.get('collective_seq_id')} {e.get('profiling_name')} "
                   f"sizes {e.get('input_sizes')} state {e.get('state')}{' (retired)' if e.get('retired') else ''}")
    return out


def summary(reports: dict[int, dict], world_size: int, timeout_s: float, idle: float, folder: Path) -> str:
    """One line: which rank(s) are behind and where; the others' common place; where the full dumps are."""
    missing = [r for r in range(world_size) if r not in reports]
    order = lambda r: (reports[r]["collectives"], reports[r]["step"])  # noqa: E731
    low = min(order(r) for r in reports)
    behind = [r for r in sorted(reports) if order(r) == low]
    parts = [f"dist-train: hang: no progress for {idle:.0f} s (watchdog.timeout_s={timeout_s:g})"]
    if missing:
        parts.append(f"rank(s) {', '.join(map(str, missing))} did not report (dead, or stuck holding the GIL)")
    if world_size == 1:
        parts.append(f"at step {reports[0]['step']} ({reports[0]['doing']}), {reports[0]['where']}")
    elif len(behind) < len(reports):
        parts.append("behind: " + "; ".join(f"rank {r} at step {reports[r]['step']} ({reports[r]['doing']}), "
                                            f"{reports[r]['where']}" for r in behind))
        ahead = [r for r in sorted(reports) if r not in behind]
        waiting = reports[ahead[0]]
        parts.append(f"rank(s) {', '.join(map(str, ahead))} wait in {waiting['last_collective'] or 'a collective'}")
    elif not missing:
        parts.append("every rank is at the same place: " + reports[behind[0]]["where"])
    parts.append(f"stacks in {folder}/rank<R>.txt")
    return " | ".join(parts)
