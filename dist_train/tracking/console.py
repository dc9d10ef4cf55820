"""Rank 0's console: a tqdm progress bar on a terminal, plain log lines otherwise (files, CI, SLURM logs)."""

from __future__ import annotations

import sys

from dist_train.tracking import Tracker


def format_metrics(metrics: dict) -> str:
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}" if k != "lr" else f"{k} {v:.3e}")
        else:
            parts.append(f"{k} {v}")
    return " | ".join(parts)


class ConsoleTracker(Tracker):
    def __init__(self, max_steps: int, start_step: int = 0):
        self.max_steps = max_steps
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, dynamic_ncols=True, unit="step")

    def log(self, metrics, step):
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            shown = {k: metrics[k] for k in ("loss", "samples_per_s") if k in metrics}
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            if any(k.startswith("eval/") for k in metrics):
                self.bar.write(f"step {step}/{self.max_steps} | {format_metrics(metrics)}")
        else:
            print(f"step {step}/{self.max_steps} | {format_metrics(metrics)}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
