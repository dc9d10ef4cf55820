"""`dist-train sbatch --dry-run`: the batch script it would submit; slurm/*.sbatch stay that template; bad input.
(Submitting to a real cluster: tests/slurm/test_jobs.py.)"""

from __future__ import annotations

import sys

from support import REPO, RECIPES, run_cli
from dist_train.cluster.slurm import JobSpec, render

CONFIG = str(RECIPES / "fashion_mnist_mlp.yaml")


def test_dry_run_prints_the_script(tmp_path):
    out = run_cli("sbatch", CONFIG, f"run_dir={tmp_path}", "train.max_steps=7", "--nodes", "4", "--gpus-per-node",
                  "8", "--partition", "gpu", "--time", "02:00:00", "--dry-run").stdout
    directives = [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("#SBATCH")]
    assert directives == ["--job-name=dist-train", "--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8",
                          "--partition=gpu", "--time=02:00:00", "--signal=B:USR1@120", "--requeue",
                          "--open-mode=append", f"--output={tmp_path}/slurm-%j.out"]
    assert f"set -- {CONFIG} run_dir={tmp_path} train.max_steps=7\n" in out
    assert f"PYTHON=${{PYTHON:-{sys.executable}}}" in out
    assert 'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in out
    assert "--nproc-per-node=8" in out and '--rdzv-endpoint="$head_node:$rdzv_port"' in out
    assert not (tmp_path / "job.sbatch").exists()  # dry run: nothing written


def test_slurm_scripts_are_the_rendered_template():
    for name, nodes in (("single_node.sbatch", 1), ("multi_node.sbatch", 2)):
        assert (REPO / "slurm" / name).read_text() == render(JobSpec(nodes=nodes, gpus_per_node=8), None), name


def test_nodes_below_one(tmp_path):
    r = run_cli("sbatch", CONFIG, f"run_dir={tmp_path}", "--nodes", "0", check=False)
    assert r.returncode == 2 and r.stderr.strip() == "dist-train: error: --nodes: 0 is not valid; use 1 or more"


def test_missing_sbatch_says_how_to_install(tmp_path):
    r = run_cli("sbatch", CONFIG, f"run_dir={tmp_path}", check=False, PATH="/nonexistent")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "sbatch: command not found" in r.stderr and "apt-get install slurm-client" in r.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written


def test_gpus_without_cpus_per_task_warns(tmp_path):
    args = ["sbatch", CONFIG, f"run_dir={tmp_path}", "--gpus-per-node", "4", "--dry-run"]
    assert "warning: --gpus-per-node 4 without --cpus-per-task" in run_cli(*args).stderr
    assert "warning" not in run_cli(*args, "--cpus-per-task", "32").stderr
