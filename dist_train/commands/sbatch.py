"""`dist-train sbatch CONFIG [key=value ...] --nodes N --gpus-per-node G`: write the job script into the run
directory and submit it (`--dry-run` prints it instead). The script itself: dist_train.cluster.slurm."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from dist_train.cluster.slurm import JobSpec, render, require_sbatch, submit


def main(args) -> int:
    spec = JobSpec(nodes=args.nodes, gpus_per_node=args.gpus_per_node, procs_per_node=args.procs_per_node,
                   partition=args.partition or "", time=args.time, job_name=args.job_name,
                   cpus_per_task=args.cpus_per_task, signal_lead_s=args.signal_lead, python=sys.executable,
                   max_restarts=args.max_restarts)
    spec.check()  # before the config: these need no torch import
    for warning in spec.warnings():
        print(warning, file=sys.stderr)
    from dist_train.config import load

    config = load(args.config, args.overrides)  # a bad config fails here, not in the queue hours later
    run_dir = Path(config.run_dir).resolve()
    spec = dataclasses.replace(spec, output=str(run_dir / "slurm-%j.out"))
    script = render(spec, [args.config, *args.overrides])
    if args.dry_run:
        print(script, end="")
        return 0
    require_sbatch()  # before writing anything
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "job.sbatch"
    path.write_text(script)
    job_id = submit(path)
    print(f"submitted SLURM job {job_id}: {path} (log {run_dir}/slurm-{job_id}.out)")
    return 0
