"""Cluster environments: who am I (rank, local rank, world size) and where is the rendezvous.

Each launcher that starts our processes sets its own variables; an environment class reads one launcher's set.
`detect()` tries them in order and falls back to a single process. Strategies never read launcher variables; they
receive the `DistEnv` this returns.
"""

from __future__ import annotations

from dist_train.cluster.env import DistEnv
from dist_train.cluster.slurm import SlurmEnvironment
from dist_train.cluster.torchrun import TorchrunEnvironment

# Order matters: torchrun sets its variables inside SLURM jobs too, and then it is the one that started us; SLURM's
# own variables describe our process only when srun started it directly (one task per process).
ENVIRONMENTS = [TorchrunEnvironment, SlurmEnvironment]


def detect() -> DistEnv:
    for environment in ENVIRONMENTS:
        if environment.detect():
            return environment.read()
    return DistEnv.single()


__all__ = ["DistEnv", "detect", "ENVIRONMENTS"]
