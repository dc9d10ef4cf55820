"""The process's place in the job, as read from whichever launcher started it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    restart_count: int  # how many times the launcher restarted this job's workers (0 on the first attempt)
    launcher: str  # "single", "torchrun", ...
    # torchrun's agent already runs the TCPStore server; when no agent does (srun without torchrun), rank 0 hosts it.
    agent_hosts_store: bool = False
    nodes: int = 1  # launcher agents in this round (torchrun's GROUP_WORLD_SIZE), 1 when unknown

    @classmethod
    def single(cls) -> DistEnv:
        return cls(0, 0, 1, 1, "127.0.0.1", 0, 0, "single")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0
