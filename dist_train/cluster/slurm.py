"""SLURM, all of it: who am I under `srun`, the batch script of a job or job array, submission, and requeue.

Who am I: `srun` without torchrun starts one task per process (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS,
SLURM_NODEID). No launcher agent hosts a rendezvous store then, so rank 0 hosts the TCPStore itself on the first
node of the step, found with `scontrol show hostnames`; the port is MASTER_PORT when set, else derived from the job
id (`port_for_job`, also what the batch script's torchrun rendezvous uses), so every task computes the same one.
Detection requires a job *step* (SLURM_STEP_ID): `dist-train train` run directly in a batch script is one process.

The batch script (`render`): `#SBATCH` directives, one task per node running torchrun, c10d rendezvous on the head
node. The batch shell owns the requeue decision, because it is the one process alive from the job's start to its end
and no `srun --kill-on-bad-exit` can kill it first (docs/scaling-out.md has the table of signals):
- USR1 (`--signal=B:USR1@LEAD`, LEAD seconds before the time limit, or `scancel --signal=USR1 --batch`): the shell
  decides to requeue at once, relays USR1 to the workers (re-sent every 2 s: a worker still starting up ignores it
  until its handler is in place), and runs `scontrol requeue` when the workers have saved and exited, or at the
  latest REQUEUE_MARGIN_S before the time limit; at most `slurm.max_requeues` times.
- TERM to the workers, from preemption (the steps only, at the start of the grace time): they checkpoint and stop,
  and the shell requeues (uncapped: the job is not at fault), because SLURM requeues a preempted job only if it is
  still running when the grace time ends (measured: one that finished in time ended COMPLETED, not requeued).
- TERM to the batch shell too, from `scancel JOBID`: checkpoint, then stop; a cancel is never requeued.
torchrun itself would die of USR1 and exits 1 on TERM; it runs with both ignored (inherited by its workers until
dist_train.preemption installs its handlers), so a stop ends in exit code 0 on every node, never in "failed".
The files under slurm/ are this template rendered for 1 and 2 nodes (tests keep them identical).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dist_train.cluster.env import DistEnv
from dist_train.errors import UsageError

PORT_BASE, PORT_SPAN = 15000, 20000
REQUEUE_MARGIN_S = 15  # requeue at least this long before the time limit, even if the workers are still saving
NOT_REQUEUED_EXIT = 75  # EX_TEMPFAIL: stopped at a time-limit warning with a checkpoint, requeues used up
INSTALL_HINT = ("install the SLURM client (Debian/Ubuntu: apt-get install slurm-client; slurm-wlm for a whole "
                "local cluster) or run this on the cluster's login node")


# ----------------------------------------------------------------------------------------------- who am I (srun)

def expand_tasks_per_node(spec: str) -> list[int]:
    """SLURM's compressed counts, '2(x3),1' -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"unrecognised SLURM tasks-per-node '{spec}'")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def first_hostname(nodelist: str) -> str:
    """The first node of a SLURM nodelist ('n[1-2]' -> 'n1'), expanded by SLURM's own scontrol."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise UsageError(f"SLURM_JOB_NODELIST: cannot expand '{nodelist}' with `scontrol show hostnames` ({e}); "
                         "set MASTER_ADDR to the first node's address") from None
    return out[0]


def port_for_job(job_id: str) -> int:
    """The rendezvous port of a job: the same on every node without talking to the others."""
    return PORT_BASE + int(job_id) % PORT_SPAN


class SlurmEnvironment:
    @staticmethod
    def detect() -> bool:
        e = os.environ
        return "SLURM_PROCID" in e and "SLURM_STEP_ID" in e and ("SLURM_STEP_NUM_TASKS" in e or "SLURM_NTASKS" in e)

    @staticmethod
    def read() -> DistEnv:
        e = os.environ
        node_id = int(e.get("SLURM_NODEID", 0))
        per_node = e.get("SLURM_STEP_TASKS_PER_NODE") or e.get("SLURM_TASKS_PER_NODE")
        local_world_size = expand_tasks_per_node(per_node)[node_id] if per_node else 1
        nodelist = e.get("SLURM_STEP_NODELIST") or e.get("SLURM_JOB_NODELIST", "")
        master_addr = e.get("MASTER_ADDR") or (first_hostname(nodelist) if nodelist else "127.0.0.1")
        master_port = int(e["MASTER_PORT"]) if "MASTER_PORT" in e else port_for_job(e.get("SLURM_JOB_ID", "0"))
        return DistEnv(
            rank=int(e["SLURM_PROCID"]),
            local_rank=int(e.get("SLURM_LOCALID", 0)),
            world_size=int(e.get("SLURM_STEP_NUM_TASKS") or e["SLURM_NTASKS"]),
            local_world_size=local_world_size,
            master_addr=master_addr,
            master_port=master_port,
            restart_count=int(e.get("SLURM_RESTART_COUNT", 0)),
            launcher="slurm",
            agent_hosts_store=False,
            nodes=len(expand_tasks_per_node(per_node)) if per_node else 1,
        )


# ----------------------------------------------------------------------------------------------- the batch script

@dataclass(frozen=True)
class JobSpec:
    nodes: int = 1
    gpus_per_node: int = 0
    procs_per_node: int = 0  # 0: one per GPU, or 1 without GPUs
    partition: str = ""
    time: str = "01:00:00"
    job_name: str = "dist-train"
    cpus_per_task: int = 0  # 0: SLURM's default
    signal_lead_s: int = 120  # seconds between the time-limit warning and the time limit
    output: str = "slurm-%j.out"
    python: str = "python"
    max_restarts: int = 0  # torchrun restarts of the workers inside one job attempt (e.g. after a hang)
    array_file: str = ""  # a job array: task i appends line i+1 of this file to the train arguments
    array_size: int = 0

    @property
    def procs(self) -> int:
        return self.procs_per_node or max(self.gpus_per_node, 1)

    def check(self) -> None:
        for name, value, low in (("--nodes", self.nodes, 1), ("--gpus-per-node", self.gpus_per_node, 0),
                                 ("--procs-per-node", self.procs_per_node, 0),
                                 ("--cpus-per-task", self.cpus_per_task, 0),
                                 ("--signal-lead", self.signal_lead_s, REQUEUE_MARGIN_S + 5),
                                 ("--max-restarts", self.max_restarts, 0)):
            if value < low:
                raise UsageError(f"{name}: {value} is not valid; use {low} or more")

    def warnings(self) -> list[str]:
        if self.gpus_per_node and not self.cpus_per_task:
            return [f"warning: --gpus-per-node {self.gpus_per_node} without --cpus-per-task: each node's torchrun and "
                    "its workers share SLURM's default CPU share (often 1 CPU); give e.g. --cpus-per-task "
                    f"{8 * self.gpus_per_node}"]
        return []


def render(spec: JobSpec, train_args: list[str] | None) -> str:
    """The batch script. `train_args` None: CONFIG and overrides come from the sbatch command line ("$@")."""
    spec.check()
    directives = [f"--job-name={spec.job_name}", f"--nodes={spec.nodes}", "--ntasks-per-node=1"]
    if spec.gpus_per_node:
        directives.append(f"--gpus-per-node={spec.gpus_per_node}")
    if spec.cpus_per_task:
        directives.append(f"--cpus-per-task={spec.cpus_per_task}")
    if spec.partition:
        directives.append(f"--partition={spec.partition}")
    if spec.array_size:
        directives.append(f"--array=0-{spec.array_size - 1}")
    directives += [f"--time={spec.time}", f"--signal=B:USR1@{spec.signal_lead_s}",
                   "--requeue", "--open-mode=append", f"--output={spec.output}"]
    if train_args is None:
        args = ['[ $# -ge 1 ] || { echo "usage: sbatch $0 CONFIG [key=value ...]" >&2; exit 2; }']
    else:
        args = ["set -- " + shlex.join(train_args)]
    if spec.array_size:
        args += [f"mapfile -t trials < {shlex.quote(spec.array_file)}",
                 '# array task i: line i+1 of the trials file holds its own key=value overrides',
                 'eval "set -- \\"\\$@\\" ${trials[$SLURM_ARRAY_TASK_ID]}"']
    cpus = f" --cpus-per-task={spec.cpus_per_task}" if spec.cpus_per_task else ""
    restarts = f" --max-restarts={spec.max_restarts}" if spec.max_restarts else ""
    lead = spec.signal_lead_s
    lines = [
        "#!/bin/bash",
        f"# dist_train job: {spec.nodes} node(s) x {spec.procs} process(es) per node: one task per node runs torchrun,",
        "# which starts the processes. Signals (docs/scaling-out.md): USR1, sent by SLURM "
        f"{lead} s before the time limit",
        "# (or `scancel --signal=USR1 --batch JOBID`): checkpoint, then requeue, up to slurm.max_requeues times;",
        "# TERM: checkpoint, then stop; requeued after preemption, not after `scancel JOBID`.",
        *(["# Submit: sbatch THIS_FILE CONFIG [key=value ...]; sbatch options (--nodes, --time, ...) override these.",
           "# Same template as `dist-train sbatch`, which fills in CONFIG and overrides (dist_train/cluster/slurm.py)."]
          if train_args is None else []),
        *(f"#SBATCH {d}" for d in directives),
        "",
        "set -uo pipefail",
        *args,
        f"PYTHON=${{PYTHON:-{spec.python}}}",
        "# One fresh rendezvous store per torchrun restart round (dist_train/cluster/torchrun.py).",
        "export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
        "# The id to signal and requeue: an array task's own, never the whole array's.",
        'job=$SLURM_JOB_ID; [ -n "${SLURM_ARRAY_TASK_ID:-}" ] && job=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}',
        "attempt=${SLURM_RESTART_COUNT:-0}",
        'settings=$("$PYTHON" -c \'import sys; from dist_train.cluster.slurm import job_settings; '
        'job_settings(sys.argv[1:])\' "$@") || exit 2',
        'read -r max_requeues rdzv_port <<< "$settings"',
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'echo "job $job attempt $attempt: $SLURM_JOB_NUM_NODES node(s), rendezvous $head_node:$rdzv_port"',
        "",
        "warned=0 cancelled=0",
        "requeue() {  # $1: why",
        "    trap '' TERM  # SLURM ends this attempt now",
        '    echo "dist-train: $1: requeueing job $job" && scontrol requeue "$job" && exit 0',
        '    echo "dist-train: scontrol requeue $job failed; resubmit the job to resume from its last checkpoint"',
        f"    exit {NOT_REQUEUED_EXIT}",
        "}",
        "on_warning() {",
        '    [ "$warned" = 1 ] && return',
        f"    warned=1 requeue_by=$((SECONDS + {lead - REQUEUE_MARGIN_S}))",
        f'    echo "dist-train: USR1 (time limit in {lead} s): workers checkpoint at the next step; job $job requeues"',
        '    scancel --signal=USR1 "$job" 2>/dev/null',
        "}",
        "trap on_warning USR1",
        "trap 'cancelled=1; echo \"dist-train: SIGTERM (scancel): workers checkpoint and stop; not requeued\"' TERM",
        "",
        "status=0",
        'if [ "$warned" = 0 ] && [ "$cancelled" = 0 ]; then',
        "    # Slurm 22.05's srun does not inherit --cpus-per-task from the allocation: pass it on. torchrun runs with",
        "    # USR1 and TERM ignored (PET_SIGNALS_TO_HANDLE is torch 2.13's --signals-to-handle): they are for",
        "    # its workers, which save and exit 0; torchrun would die of USR1 and exit 1 on TERM, and then",
        "    # srun --kill-on-bad-exit would kill the others.",
        f'    PET_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT srun --kill-on-bad-exit=1{cpus} \\',
        '        bash -c \'trap "" USR1 TERM; exec "$@"\' torchrun "$PYTHON" -m torch.distributed.run \\',
        f'        --nnodes="$SLURM_JOB_NUM_NODES" --nproc-per-node={spec.procs}{restarts} \\',
        '        --rdzv-backend=c10d --rdzv-endpoint="$head_node:$rdzv_port" --rdzv-id="$SLURM_JOB_ID" \\',
        '        -m dist_train train "$@" &',
        "    srun_pid=$!",
        "    # `wait` returns early on every trapped signal: keep waiting until srun has ended. After the warning,",
        "    # USR1 is re-sent every 2 s (a worker still starting up ignores it until its handler is in place), and",
        f"    # the job is requeued {REQUEUE_MARGIN_S} s before the time limit at the latest, workers done or not.",
        '    while kill -0 "$srun_pid" 2>/dev/null; do',
        '        if [ "$warned" = 0 ]; then wait "$srun_pid"; status=$?',
        '        elif (( SECONDS >= requeue_by )); then echo "dist-train: workers still running"; break',
        '        else sleep 2; scancel --signal=USR1 "$job" 2>/dev/null',
        "        fi",
        "    done",
        '    kill -0 "$srun_pid" 2>/dev/null || { wait "$srun_pid"; status=$?; }',
        "fi",
        'if [ "$warned" = 1 ]; then',
        '    (( attempt < max_requeues )) && requeue "time limit (requeue $((attempt + 1)) of at most $max_requeues)"',
        '    echo "dist-train: not requeued: slurm.max_requeues=$max_requeues used up; resubmit to resume"',
        f"    exit {NOT_REQUEUED_EXIT}",
        "fi",
        "# Preemption signals the steps only (TERM, then the grace time). SLURM requeues a preempted job",
        "# (PreemptMode=REQUEUE) only if it still runs when the grace time ends: one whose workers saved and stopped",
        "# in time would end COMPLETED, its requeue lost. So the requeue is asked for here.",
        'if [ "$cancelled" = 0 ] && scontrol show job "$job" 2>/dev/null | grep -q "PreemptTime=[0-9]"; then',
        '    requeue "preempted"',
        "fi",
        'exit "$status"',
        "",
    ]
    return "\n".join(lines)


def job_settings(argv: list[str]) -> None:
    """For the batch script: print `MAX_REQUEUES RDZV_PORT` of this job attempt (CONFIG [key=value ...] in argv).
    Reads only the YAML's `slurm:` section (no torch import), so it answers in a fraction of a second."""
    from dist_train.config import slurm_section

    try:
        max_requeues = slurm_section(argv[0], argv[1:]).max_requeues
    except UsageError as e:
        print(f"dist-train: error: {e}", file=sys.stderr)
        sys.exit(2)
    port = os.environ.get("RDZV_PORT") or port_for_job(os.environ.get("SLURM_JOB_ID", "0"))
    print(max_requeues, port)


# ----------------------------------------------------------------------------------------------- submission

def require_sbatch(what: str = "sbatch") -> None:
    if shutil.which("sbatch") is None:
        prefix = "" if what == "sbatch" else f"{what}: "
        raise UsageError(f"{prefix}sbatch: command not found; {INSTALL_HINT} (or use --dry-run to print the script)")


def submit(script: Path, what: str = "sbatch") -> str:
    """sbatch the script; returns the job id. SLURM's own refusal (bad partition, time, ...) becomes the error."""
    require_sbatch(what)
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        answer = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise UsageError(f"{what}: SLURM refused {script}: {answer}")
    return done.stdout.strip().split(";")[0]
