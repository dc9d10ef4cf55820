"""Rank 0's console: a tqdm progress bar on a terminal (step/max_steps, loss, samples/s, ETA), plain log lines
otherwise (files, CI, SLURM logs), with numbers written for people: `samples_per_s 20370`, not `2.037e+04`. Each
line starts with the local wall-clock time, so a log can be lined up with other events of the job."""

from __future__ import annotations

import sys
import time

from dist_train.tracking import Tracker

_SCIENTIFIC = ("lr",)  # values that live around 1e-4 and are read as exponents


def format_value(key: str, v) -> str:
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v == 0:
        return "0"
    if key.split("/")[-1] in _SCIENTIFIC:
        return f"{v:.3e}"
    if key.endswith("_share") or key in ("mfu", "goodput") or key.startswith("badput/"):
        return f"{100 * v:.1f}%"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.3e}"
    return f"{v:.4g}"


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def format_metrics(metrics: dict) -> str:
    # The badput breakdown stays in metrics.jsonl and W&B; a console line shows `goodput` alone.
    return " | ".join(f"{k} {format_value(k, v)}" for k, v in metrics.items() if not k.startswith("badput/"))


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ConsoleTracker(Tracker):
    def __init__(self, max_steps: int, stream=None, bar: bool | None = None):
        self.max_steps = max_steps
        self.stream = stream  # None: log lines to stdout, the bar to stderr
        self.use_bar = sys.stderr.isatty() if bar is None else bar
        self.bar = None
        self.first_step = 0
        self.started = time.perf_counter()

    def begin(self, step):
        self.first_step, self.started = step, time.perf_counter()
        if self.use_bar:
            from tqdm import tqdm

            # initial=step: a resumed run's ETA counts only the steps this process has done itself.
            self.bar = tqdm(total=self.max_steps, initial=step, dynamic_ncols=True, unit="step",
                            file=self.stream or sys.stderr)

    def log(self, metrics, step):
        if self.bar is not None:
            shown = {k: metrics[k] for k in ("loss", "samples_per_s") if k in metrics}
            if shown:  # set before update(), which redraws the bar once with both
                self.bar.set_postfix_str(
                    ", ".join(f"{k.replace('_per_s', '/s')} {format_value(k, v)}" for k, v in shown.items()),
                    refresh=False,
                )
            self.bar.update(step - self.bar.n)
            if any(k.startswith("eval/") for k in metrics):
                self.bar.write(f"{timestamp()} step {step}/{self.max_steps} | {format_metrics(metrics)}",
                               file=self.bar.fp)
            return
        line = f"{timestamp()} step {step}/{self.max_steps} | {format_metrics(metrics)}"
        done = step - self.first_step
        if done > 0 and step < self.max_steps and not any(k.startswith("eval/") for k in metrics):
            eta = (time.perf_counter() - self.started) / done * (self.max_steps - step)
            line += f" | eta {format_duration(eta)}"
        print(line, file=self.stream or sys.stdout, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
