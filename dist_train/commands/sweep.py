"""`dist-train sweep CONFIG [key=value ...] --grid k=v1,v2 --random k=v1,v2,v3 --trials N [--slurm | --collect]`.

Runs the trials one after the other (each `dist-train train` in its own process, so a failed trial cannot take the
sweep down, each with its own run_dir under the config's run_dir) and prints the trials ranked by an eval metric.
With --slurm it writes a job-array script and trials.txt under the run_dir and submits them with sbatch instead;
`--collect` (same arguments) prints the ranked table of trials that have run.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from dist_train import sweep
from dist_train.errors import UsageError


def main(args) -> int:
    from dist_train.config import load

    if args.trials is not None and args.trials < 1:
        raise UsageError(f"sweep --trials: must be >= 1, got {args.trials}")
    if args.nproc < 1:
        raise UsageError(f"sweep --nproc: must be >= 1, got {args.nproc}")
    base = load(args.config, args.overrides)
    grid = [sweep.parse_axis(s, "--grid") for s in args.grid]
    rand = [sweep.parse_axis(s, "--random") for s in args.random]
    if not grid and not rand:
        raise UsageError("sweep: give at least one --grid or --random axis, e.g. --grid optimizer.lr=1e-3,3e-3")
    base_dir = Path(base.run_dir)
    trials = sweep.plan(grid, rand, args.trials, args.seed, base_dir)
    for t in trials:  # check every trial's config before anything runs
        load(args.config, [*args.overrides, *t.overrides])
    es = base.train.early_stopping
    metric = args.metric or (es.metric if es else "loss")
    mode = args.mode or (es.mode if es else "min")
    swept = [k for k, _ in grid + rand]

    if args.slurm:
        return _submit(args, trials, base_dir)
    if not args.collect:
        for t in trials:
            cmd = sweep.train_command(args.config, args.overrides, t, args.nproc)
            print(f"[{t.name}] {' '.join(t.overrides[:-1])}", flush=True)
            t.run_dir.mkdir(parents=True, exist_ok=True)
            with open(base_dir / f"{t.name}.log", "w") as log:
                code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
            value = sweep.last_eval(t.run_dir, metric)
            status = f"eval/{metric} {value:.6g}" if value is not None else "no eval value"
            print(f"[{t.name}] {'done' if code == 0 else f'FAILED (exit {code}, see {base_dir / t.name}.log)'}"
                  f" | {status}", flush=True)
    values = {t.index: sweep.last_eval(t.run_dir, metric) for t in trials}
    table = sweep.ranked_table(trials, values, swept, metric, mode)
    (base_dir / "sweep.txt").write_text(table + "\n")
    print(table)
    return 0 if all(v is not None for v in values.values()) else 1


def _submit(args, trials, base_dir: Path) -> int:
    """One SLURM job array, the same batch script as `dist-train sbatch` (signals, requeue of the task's own id)."""
    from dist_train.cluster.slurm import JobSpec, render, require_sbatch, submit

    spec = JobSpec(procs_per_node=args.nproc, partition=args.partition or "", time=args.time,
                   job_name="dist-train-sweep", python=sys.executable, output=str(base_dir.resolve() / "trial_%a.log"),
                   array_file=str((base_dir / "trials.txt").resolve()), array_size=len(trials))
    script = render(spec, [args.config, *args.overrides])
    require_sbatch("sweep --slurm")  # before writing anything
    base_dir.mkdir(parents=True, exist_ok=True)
    (base_dir / "trials.txt").write_text(sweep.trials_file(trials))
    path = base_dir / "sweep_array.sbatch"
    path.write_text(script)
    job = submit(path, "sweep --slurm")
    print(f"submitted job array {job} ({len(trials)} trials): {path}")
    collect = ["--collect" if a == "--slurm" else a for a in sys.argv[1:]]  # argv[1] is the subcommand, `sweep`
    print("when it has run: " + shlex.join(["dist-train", *collect]))
    return 0
