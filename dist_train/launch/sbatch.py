"""`dist-train sbatch`: write the SLURM batch script for N nodes x P processes per node, then submit it.

The script is the common form: `#SBATCH` directives, the head node from `scontrol show hostnames`, and `srun`
starting one torchrun per node that meet in a c10d rendezvous on the head node. For preemption, SLURM sends USR1
to the batch shell ahead of the time limit (`--signal=B:USR1@...`); the shell relays it to the job steps as SIGTERM,
which torchrun passes on to its workers (torchrun itself would die on USR1), and the workers checkpoint and requeue
the job (dist_train.preemption). `--open-mode=append` keeps the log of every attempt in one file.
The files under slurm/ are this template rendered for 1 and 2 nodes (tests keep them identical).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dist_train.errors import UsageError

INSTALL_HINT = ("install the SLURM client (Debian/Ubuntu: apt-get install slurm-client; slurm-wlm for a whole "
                "local cluster) or run this on the cluster's login node")


@dataclass(frozen=True)
class JobSpec:
    nodes: int = 1
    gpus_per_node: int = 0
    procs_per_node: int = 0  # 0: one per GPU, or 1 without GPUs
    partition: str = ""
    time: str = "01:00:00"
    job_name: str = "dist-train"
    cpus_per_task: int = 0  # 0: SLURM's default
    signal_lead_s: int = 120  # seconds between the preemption warning and the time limit
    output: str = "slurm-%j.out"
    python: str = "python"

    @property
    def procs(self) -> int:
        return self.procs_per_node or max(self.gpus_per_node, 1)

    def check(self) -> None:
        for name, value, low in (("--nodes", self.nodes, 1), ("--gpus-per-node", self.gpus_per_node, 0),
                                 ("--procs-per-node", self.procs_per_node, 0), ("--cpus-per-task", self.cpus_per_task, 0),
                                 ("--signal-lead", self.signal_lead_s, 1)):
            if value < low:
                raise UsageError(f"{name}: {value} is not valid; use {low} or more")


def render(spec: JobSpec, train_args: list[str] | None) -> str:
    """The batch script. `train_args` None: CONFIG and overrides come from the sbatch command line ("$@")."""
    spec.check()
    directives = [f"--job-name={spec.job_name}", f"--nodes={spec.nodes}",
                  "--ntasks-per-node=1"]
    if spec.gpus_per_node:
        directives.append(f"--gpus-per-node={spec.gpus_per_node}")
    if spec.cpus_per_task:
        directives.append(f"--cpus-per-task={spec.cpus_per_task}")
    if spec.partition:
        directives.append(f"--partition={spec.partition}")
    directives += [f"--time={spec.time}", f"--signal=B:USR1@{spec.signal_lead_s}",
                   "--requeue", "--open-mode=append", f"--output={spec.output}"]
    args_line = ('set -- ' + shlex.join(train_args) if train_args is not None
                 else '[ $# -ge 1 ] || { echo "usage: sbatch $0 CONFIG [key=value ...]" >&2; exit 2; }')
    cpus = f" --cpus-per-task={spec.cpus_per_task}" if spec.cpus_per_task else ""
    lines = ["#!/bin/bash",
             f"# dist_train job: {spec.nodes} node(s) x {spec.procs} process(es) per node: one task per node runs torchrun,",
             f"# which starts the processes. USR1 comes {spec.signal_lead_s} s before the time limit (preemption warning).",
             *(["# Submit: sbatch THIS_FILE CONFIG [key=value ...]; sbatch options (--nodes, --time, ...) override these.",
                "# Same template as `dist-train sbatch`, which fills in CONFIG and overrides (dist_train/launch/sbatch.py)."]
               if train_args is None else []),
             *(f"#SBATCH {d}" for d in directives),
             "",
             "set -uo pipefail",
             args_line,
             f"PYTHON=${{PYTHON:-{spec.python}}}",
             'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
             'rdzv_port=${RDZV_PORT:-$((15000 + SLURM_JOB_ID % 20000))}',
             'echo "job $SLURM_JOB_ID attempt ${SLURM_RESTART_COUNT:-0}: $SLURM_JOB_NUM_NODES node(s), rendezvous $head_node:$rdzv_port"',
             "",
             "# USR1 (time limit near, or `scancel --signal=USR1 --batch`): ask the workers to checkpoint and requeue.",
             'trap \'echo "preemption signal: workers checkpoint and requeue"; scancel --signal=TERM "$SLURM_JOB_ID"\' USR1',
             "",
             # Slurm 22.05's srun does not inherit --cpus-per-task from the allocation: pass it on.
             f'srun --kill-on-bad-exit=1{cpus} "$PYTHON" -m torch.distributed.run \\',
             f'    --nnodes="$SLURM_JOB_NUM_NODES" --nproc-per-node={spec.procs} \\',
             '    --rdzv-backend=c10d --rdzv-endpoint="$head_node:$rdzv_port" --rdzv-id="$SLURM_JOB_ID" \\',
             '    -m dist_train train "$@" &',
             "srun_pid=$!",
             "# A trapped signal interrupts `wait`; keep waiting until srun itself has ended.",
             'while wait "$srun_pid"; status=$?; kill -0 "$srun_pid" 2>/dev/null; do :; done',
             'exit "$status"',
             ""]
    return "\n".join(lines)


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise UsageError(f"sbatch: command not found; {INSTALL_HINT} (or use --dry-run to print the script)")


def submit(script: Path) -> str:
    """sbatch the script; returns the job id. SLURM's own refusal (bad partition, time, ...) becomes the error."""
    require_sbatch()
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        answer = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise UsageError(f"sbatch: SLURM refused {script}: {answer}")
    return done.stdout.strip().split(";")[0]
