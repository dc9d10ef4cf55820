"""`dist-train launch`: "N nodes x P processes per node" -> the torchrun command, then exec it.

One node uses torchrun's standalone rendezvous (a free local port, nothing to configure). Several nodes use c10d
rendezvous: every node runs the same command with the head node's HOST:PORT; the torchrun whose machine owns that
address hosts the store, the others join it. A node that is not the head first checks that the endpoint accepts TCP
connections, for a bounded time, so a wrong address ends in one line naming host:port instead of a long hang.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dist_train.errors import UsageError

DEFAULT_RDZV_PORT = 29500


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
        if self.nodes > 1 and not self.rdzv_endpoint:
            raise UsageError(f"--rdzv-endpoint: required with --nodes {self.nodes}; give the head node as HOST[:PORT], "
                             "the same on every node")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nodes:
            raise UsageError(f"--node-rank: {self.node_rank} is not valid for --nodes {self.nodes}; "
                             f"use 0..{self.nodes - 1}")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.rdzv_endpoint.rpartition(":") if ":" in self.rdzv_endpoint else (self.rdzv_endpoint, "", "")
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
        print(shlex.join(cmd))
        return 0
    if plan.nodes > 1:
        host, port = plan.host_port
        if not is_local_address(host):
            wait_for_endpoint(host, port, connect_timeout_s)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)  # torchrun replaces us: its signals and exit code are the user's
