"""torchrun (torch.distributed.run): RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT, TORCHELASTIC_RESTART_COUNT."""

from __future__ import annotations

import os

from dist_train.cluster.env import DistEnv


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
        )
