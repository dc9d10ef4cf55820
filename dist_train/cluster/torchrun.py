"""torchrun (torch.distributed.run): who am I under it, and the torchrun command that starts N nodes x P processes.

Under torchrun every worker reads RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT and TORCHELASTIC_* from its agent
(`TorchrunEnvironment`). `dist-train launch` builds the torchrun command line (`LaunchPlan`, `torchrun_command`) and
execs it: one node uses torchrun's standalone rendezvous (a free local port, nothing to configure); several nodes use
c10d rendezvous, every node running the same command with the head node's HOST:PORT. A node that is not the head
first checks that the endpoint accepts TCP connections, for a bounded time, so a wrong address ends in one line
naming host:port instead of a long hang.

Restarts (`--max-restarts`, or a node joining or leaving): by default torchrun's agents share one TCPStore for the
whole job, whose keys outlive every rendezvous round, and workers only learn their own agent's restart count, which
differs between nodes when one node restarts on a failure and the other on the membership change (measured:
counts 0 and 1, the job hung). `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` makes each round's rank-0 agent pick a fresh
port and publish it through that round's rendezvous store, so MASTER_PORT is shared by every node of the round and
the workers' rank 0 hosts a new, empty store (dist_train.distributed). The launchers of this project set it.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dist_train.cluster.env import DistEnv
from dist_train.errors import UsageError

DEFAULT_RDZV_PORT = 29500
# torchrun reads this in its agents: a fresh store per rendezvous round (see the module docstring).
FRESH_STORE_PER_ROUND = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


class TorchrunEnvironment:
    @staticmethod
    def detect() -> bool:
        return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)

    @staticmethod
    def read() -> DistEnv:
        e = os.environ
        return DistEnv(
            rank=int(e["RANK"]),
            local_rank=int(e.get("LOCAL_RANK", 0)),
            world_size=int(e["WORLD_SIZE"]),
            local_world_size=int(e.get("LOCAL_WORLD_SIZE", e["WORLD_SIZE"])),
            master_addr=e.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(e.get("MASTER_PORT", 29500)),
            restart_count=int(e.get("TORCHELASTIC_RESTART_COUNT", 0)),
            launcher="torchrun",
            agent_hosts_store=e.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true",
            nodes=int(e.get("GROUP_WORLD_SIZE", 1)),
        )


def restart_hazard(env: DistEnv) -> str:
    """A warning when this torchrun job can restart into a hang (the shared store of several agents), else ''."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0))
    if env.launcher != "torchrun" or not env.agent_hosts_store or env.nodes < 2 or restarts < 1:
        return ""
    return ("warning: torchrun on several nodes with --max-restarts shares one rendezvous store across restarts; "
            "a restarted job can hang. Export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 before torchrun on every node "
            "(dist-train launch, dist-train sbatch and launch/*.sh do)")


@dataclass(frozen=True)
class LaunchPlan:
    nodes: int
    procs_per_node: int
    rdzv_endpoint: str = ""  # HOST[:PORT], multi-node only
    rdzv_id: str = "dist-train"
    node_rank: int | None = None  # optional with c10d (rank order then follows the join order)
    max_restarts: int = 0

    def check(self) -> None:
        if self.nodes < 1:
            raise UsageError(f"--nodes: {self.nodes} is not valid; use 1 or more")
        if self.procs_per_node < 1:
            raise UsageError(f"--nproc-per-node: {self.procs_per_node} is not valid; use 1 or more")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts: {self.max_restarts} is not valid; use 0 or more")
        if self.nodes > 1 and not self.rdzv_endpoint:
            raise UsageError(f"--rdzv-endpoint: required with --nodes {self.nodes}; give the head node as HOST[:PORT], "
                             "the same on every node")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nodes:
            raise UsageError(f"--node-rank: {self.node_rank} is not valid for --nodes {self.nodes}; "
                             f"use 0..{self.nodes - 1}")

    @property
    def host_port(self) -> tuple[str, int]:
        endpoint = self.rdzv_endpoint
        host, _, port = endpoint.rpartition(":") if ":" in endpoint else (endpoint, "", "")
        try:
            return host, int(port) if port else DEFAULT_RDZV_PORT
        except ValueError:
            raise UsageError(f"--rdzv-endpoint: '{self.rdzv_endpoint}' is not HOST[:PORT]") from None


def torchrun_prefix() -> list[str]:
    """torchrun of the running interpreter: the same torch and packages as this `dist-train`."""
    beside = Path(sys.executable).with_name("torchrun")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "torch.distributed.run"]


def torchrun_command(plan: LaunchPlan, train_args: list[str]) -> list[str]:
    plan.check()
    cmd = torchrun_prefix()
    if plan.nodes == 1:
        cmd += ["--standalone", f"--nproc-per-node={plan.procs_per_node}"]
    else:
        host, port = plan.host_port
        cmd += [f"--nnodes={plan.nodes}", f"--nproc-per-node={plan.procs_per_node}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint={host}:{port}", f"--rdzv-id={plan.rdzv_id}"]
        if plan.node_rank is not None:
            cmd.append(f"--node-rank={plan.node_rank}")
    if plan.max_restarts:
        cmd.append(f"--max-restarts={plan.max_restarts}")
    return cmd + ["-m", "dist_train", "train", *train_args]


def is_local_address(host: str) -> bool:
    """Whether this machine owns `host`'s address (then our torchrun hosts the rendezvous store)."""
    try:
        addr = socket.gethostbyname(host)
    except OSError:
        return False
    if addr.startswith("127."):
        return True
    with socket.socket() as s:
        try:
            s.bind((addr, 0))  # binding succeeds only on an address of one of our interfaces
            return True
        except OSError:
            return False


def wait_for_endpoint(host: str, port: int, timeout_s: float) -> None:
    """Retry a TCP connect until it succeeds or `timeout_s` passes (the head node may start a little later)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                return
        except OSError as e:
            last = e.strerror or str(e)
        if time.monotonic() >= deadline:
            raise UsageError(f"--rdzv-endpoint: {host}:{port} not reachable after {timeout_s:g} s ({last}); start the "
                             "head node first, or check the address and that the port is open between the nodes")
        time.sleep(0.5)


def launch(plan: LaunchPlan, train_args: list[str], dry_run: bool, connect_timeout_s: float) -> int:
    cmd = torchrun_command(plan, train_args)
    if dry_run:
        print(" ".join(f"{k}={v}" for k, v in FRESH_STORE_PER_ROUND.items()), shlex.join(cmd))
        return 0
    if plan.nodes > 1:
        host, port = plan.host_port
        if not is_local_address(host):
            wait_for_endpoint(host, port, connect_timeout_s)
    sys.stdout.flush()
    # torchrun replaces us: its signals and exit code are the user's.
    os.execve(cmd[0], cmd, {**os.environ, **FRESH_STORE_PER_ROUND})
