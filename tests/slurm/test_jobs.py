"""Real SLURM jobs on the local two-node cluster (`slurm` fixture): `dist-train sbatch` (torchrun per node), `srun`
without torchrun, SLURM's refusal of a bad partition, and preemption -> checkpoint -> requeue -> resume."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from support import PREEMPTIBLE_RUN, REPO, RECIPES, TINY_RUN, assert_close_losses, env, run_cli, train_losses

CONFIG = str(RECIPES / "fashion_mnist_mlp.yaml")


def submit(slurm, run_dir, *args, overrides=TINY_RUN) -> str:
    out = run_cli("sbatch", CONFIG, f"run_dir={run_dir}", *overrides, *args, "--time", "00:10:00", **slurm.env).stdout
    return re.search(r"submitted SLURM job (\d+)", out).group(1)


def log_of(run_dir, job_id) -> str:
    return (run_dir / f"slurm-{job_id}.out").read_text()


@pytest.mark.parametrize("nodes, procs", [(1, 2), (2, 1)], ids=["1node_x_2procs", "2nodes_x_1proc"])
def test_sbatch_run_matches_torchrun(slurm, fashion_root, tmp_path, torchrun_2proc_losses, nodes, procs):
    run_dir = tmp_path / "run"
    job = submit(slurm, run_dir, f"data.root={fashion_root}", "--nodes", str(nodes), "--procs-per-node", str(procs))
    assert slurm.wait_job(job) == "COMPLETED", log_of(run_dir, job)
    assert f"{nodes} node(s)" in log_of(run_dir, job) and "world size 2" in log_of(run_dir, job)
    assert (run_dir / "job.sbatch").is_file()
    assert_close_losses(train_losses(run_dir), torchrun_2proc_losses, rel=1e-5)


def test_srun_without_torchrun_matches_torchrun(slurm, fashion_root, tmp_path, torchrun_2proc_losses):
    """One task per process, rank 0 on n1 hosts the store: SlurmEnvironment, not torchrun's."""
    cmd = ["srun", "--nodes=2", "--ntasks=2", sys.executable, "-m", "dist_train", "train", CONFIG,
           f"data.root={fashion_root}", f"run_dir={tmp_path}", *TINY_RUN]
    r = subprocess.run(cmd, cwd=REPO, env=env(**slurm.env), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "world size 2" in r.stdout
    assert_close_losses(train_losses(tmp_path), torchrun_2proc_losses, rel=1e-5)


def test_unknown_partition_reports_slurms_answer(slurm, tmp_path):
    r = run_cli("sbatch", CONFIG, f"run_dir={tmp_path}", "--partition", "nosuchpart", check=False, **slurm.env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "SLURM refused" in r.stderr and "invalid partition" in r.stderr.lower()


def test_preemption_checkpoints_requeues_and_resumes(slurm, fashion_root, tmp_path, uninterrupted_losses):
    """USR1 mid-training -> all ranks save at one step -> rank 0 requeues -> attempt 1 resumes -> same losses as an
    uninterrupted run. Needs Trainer.save_checkpoint and checkpoint.resume (the checkpoint issue)."""
    overrides = [f"data.root={fashion_root}", *PREEMPTIBLE_RUN]
    run_dir = tmp_path / "preempted"
    job = submit(slurm, run_dir, "--nodes", "2", "--procs-per-node", "1", overrides=overrides)
    deadline = time.monotonic() + 180
    while not (run_dir / "metrics.jsonl").exists() or len(train_losses(run_dir)) < 10:
        assert time.monotonic() < deadline and slurm.job_state(job) in ("PENDING", "RUNNING"), log_of(run_dir, job)
        time.sleep(0.2)
    slurm.cli("scancel", "--signal=USR1", "--batch", job)

    assert slurm.wait_job(job, timeout_s=400) == "COMPLETED", log_of(run_dir, job)
    log = log_of(run_dir, job)
    assert "Restarts=1" in slurm.cli("scontrol", "show", "job", job).stdout
    assert f"job {job} attempt 1:" in log, log  # the batch script echoes SLURM_RESTART_COUNT
    step = int(re.search(r"preempted at step (\d+): checkpoint saved; requeueing SLURM job", log).group(1))
    assert 10 <= step < 300
    losses = train_losses(run_dir)
    assert set(range(step + 1, 301)) <= set(losses)  # the resumed attempt logged every remaining step
    assert_close_losses(losses, {s: uninterrupted_losses[s] for s in losses}, rel=1e-5)


def test_sweep_as_a_slurm_job_array(slurm, tmp_path):
    """`dist-train sweep --slurm` submits one array task per trial; both run on the cluster and `--collect` ranks them
    by the eval metric each trial logged in its own run_dir."""
    from support import read_metrics

    base = tmp_path / "sweep"
    args = ["sweep", RECIPES / "mlp_regression.yaml", f"run_dir={base}", "dataset.n_train=256", "dataset.n_eval=64",
            "model.hidden=8", "train.max_steps=4", "train.log_every=2", "train.eval_every=4",
            "--grid", "optimizer.lr=1e-4,1e-2", "--metric", "mse"]
    out = run_cli(*args, "--slurm", **slurm.env).stdout
    job = re.search(r"submitted job array (\d+)", out).group(1)
    for task in (0, 1):
        assert slurm.wait_job(f"{job}_{task}") == "COMPLETED", (base / f"trial_{task}.log").read_text()
    values = {i: [r["eval/mse"] for r in read_metrics(base / f"trial_00{i}") if "eval/mse" in r][-1] for i in (0, 1)}
    table = run_cli(*args, "--collect").stdout.strip().splitlines()
    assert table[0].startswith("rank") and len(table) == 3
    best = min(values, key=values.get)
    assert f"trial_00{best}" in table[1] and f"{values[best]:.6g}" in table[1]
