"""SLURM without torchrun: `srun` started one task per process (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NODEID).

No launcher agent hosts a rendezvous store here, so rank 0 hosts the TCPStore itself (`agent_hosts_store=False`) on
the first node of the step, found with `scontrol show hostnames`. The port is MASTER_PORT when set, otherwise derived
from the job id, so every task of a job computes the same one without talking to the others. Detection requires a
job *step* (SLURM_STEP_ID): a batch script running `dist-train train` without srun is one process, not SLURM_NTASKS.
"""

from __future__ import annotations

import os
import re
import subprocess

from dist_train.cluster.env import DistEnv
from dist_train.errors import UsageError

PORT_BASE, PORT_SPAN = 15000, 20000


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
        )
