"""SlurmEnvironment reads srun's variables; torchrun's win inside a SLURM job. (A real srun-started training run is in
tests/slurm/test_jobs.py.)"""

from __future__ import annotations

import pytest

from dist_train import cluster
from dist_train.cluster.slurm import SlurmEnvironment, expand_tasks_per_node, port_for_job

SRUN_TASK = {  # as srun sets them for task 3 of `srun --nodes 2 --ntasks 4` (measured on the local cluster)
    "SLURM_JOB_ID": "1234", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
    "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_JOB_NODELIST": "n[1-2]", "MASTER_ADDR": "n1",
}
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_USE_AGENT_STORE")


@pytest.fixture
def srun_env(monkeypatch):
    for k in LAUNCHER_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in SRUN_TASK.items():
        monkeypatch.setenv(k, v)
    return monkeypatch


def test_srun_task_is_detected_and_read(srun_env):
    env = cluster.detect()
    assert (env.launcher, env.rank, env.local_rank, env.world_size, env.local_world_size) == ("slurm", 3, 1, 4, 2)
    assert (env.master_addr, env.master_port) == ("n1", port_for_job("1234"))
    assert not env.agent_hosts_store  # no torchrun agent: rank 0 hosts the store


def test_master_port_from_env_wins(srun_env):
    srun_env.setenv("MASTER_PORT", "29555")
    assert SlurmEnvironment.read().master_port == 29555


def test_batch_shell_without_srun_is_one_process(srun_env):
    srun_env.delenv("SLURM_STEP_ID")  # `dist-train train` run directly in the batch script
    assert cluster.detect().launcher == "single"


def test_torchrun_inside_slurm_wins(srun_env):
    srun_env.setenv("TORCHELASTIC_RUN_ID", "x")
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_PORT": "29501"}.items():
        srun_env.setenv(k, v)
    env = cluster.detect()
    assert (env.launcher, env.rank, env.world_size) == ("torchrun", 1, 2)


def test_tasks_per_node_expansion():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert expand_tasks_per_node("4") == [4]
    with pytest.raises(ValueError):
        expand_tasks_per_node("2(x")
