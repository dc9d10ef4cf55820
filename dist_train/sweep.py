"""Hyper-parameter sweeps: plan trials from --grid/--random axes, run them, rank them by an eval metric.

A trial is the base config plus `key=value` overrides plus its own `run_dir=<base run_dir>/trial_NNN`. Grid axes
are crossed (every combination); random axes draw one value per trial from their list (seeded by --seed, so the
plan is reproducible). With --trials N the trials cycle through the grid combinations, each with fresh random
draws; without it there is one trial per grid combination. Every trial's config is loaded (and so checked) before
the first one starts. Results are read back from each trial's metrics.jsonl: the last `eval/<metric>` it logged.
"""

from __future__ import annotations

import itertools
import math
import random
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from dist_train.errors import UsageError


@dataclass
class Trial:
    index: int
    overrides: list[str]  # the trial's own key=value list, run_dir included
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name


def parse_axis(spec: str, flag: str) -> tuple[str, list[str]]:
    """'optimizer.lr=1e-3,3e-3' -> ('optimizer.lr', ['1e-3', '3e-3']); values stay text, parsed as overrides."""
    key, sep, values = spec.partition("=")
    items = [v.strip() for v in values.split(",")]
    if not sep or not key.strip() or not all(items):
        raise UsageError(f"{flag} '{spec}': expected key=v1,v2,... e.g. {flag} optimizer.lr=1e-3,3e-3")
    if key.strip() == "run_dir":
        raise UsageError(f"{flag} '{spec}': run_dir is set per trial (<run_dir>/trial_NNN); sweep other keys")
    return key.strip(), items


def plan(grid: list[tuple[str, list[str]]], rand: list[tuple[str, list[str]]], trials: int | None,
         seed: int, base_run_dir: Path) -> list[Trial]:
    keys = [k for k, _ in grid] + [k for k, _ in rand]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise UsageError(f"sweep: key {duplicated[0]} is given more than once across --grid/--random")
    combos = [list(c) for c in itertools.product(*([f"{k}={v}" for v in values] for k, values in grid))]
    count = trials if trials is not None else len(combos)
    rng = random.Random(seed)
    planned = []
    for i in range(count):
        run_dir = base_run_dir / f"trial_{i:03d}"
        drawn = [f"{k}={rng.choice(values)}" for k, values in rand]
        planned.append(Trial(i, combos[i % len(combos)] + drawn + [f"run_dir={run_dir}"], run_dir))
    return planned


def train_command(config: str, base_overrides: list[str], trial: Trial, nproc: int) -> list[str]:
    launcher = [sys.executable, "-m", "dist_train"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                    "-m", "dist_train"]
    return [*launcher, "train", config, *base_overrides, *trial.overrides]


def last_eval(run_dir: Path, metric: str) -> float | None:
    """The last logged `eval/<metric>` of a run, or None if it logged none (or its log is unreadable)."""
    from dist_train.tracking.jsonl import read_records

    path = run_dir / "metrics.jsonl"
    try:
        records = read_records(path) if path.is_file() else []
    except UsageError:
        return None
    values = [r[f"eval/{metric}"] for r in records if f"eval/{metric}" in r]
    return values[-1] if values else None


def ranked_table(trials: list[Trial], values: dict[int, float | None], swept: list[str], metric: str,
                 mode: str) -> str:
    """Best first; trials without a value (failed, no eval) last."""
    def order(t: Trial):
        v = values.get(t.index)
        if v is None or math.isnan(v):
            return (1, 0.0)
        return (0, v if mode == "min" else -v)

    header = ["rank", "trial", f"eval/{metric} ({mode})", *swept]
    rows = []
    for rank, t in enumerate(sorted(trials, key=order), 1):
        v = values.get(t.index)
        settings = dict(o.split("=", 1) for o in t.overrides)
        rows.append([str(rank), t.name, "-" if v is None else f"{v:.6g}", *(settings.get(k, "") for k in swept)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def trials_file(trials: list[Trial]) -> str:
    """trials.txt of a SLURM job array: line i+1 holds trial i's own overrides (shell words)."""
    return "\n".join(shlex.join(t.overrides) for t in trials) + "\n"
