"""Real SLURM jobs on the local two-node cluster (`slurm` fixture): `dist-train sbatch` (torchrun per node), `srun`
without torchrun, SLURM's refusal of a bad partition, and what each signal does (docs/scaling-out.md): the time-limit
warning (USR1) in set-up and mid-run, capped by slurm.max_requeues; a real preemption by a higher-priority partition;
a plain scancel; a requeued task of a sweep's job array."""

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


ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED")  # a requeue passes through the last two


def wait_for(condition, slurm, job, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        state = slurm.job_state(job)
        assert time.monotonic() < deadline and state in ACTIVE, f"{what}: job {job} {state}"
        time.sleep(0.2)


def logged_steps(run_dir) -> int:
    return len(train_losses(run_dir)) if (run_dir / "metrics.jsonl").exists() else 0


def clean_exits(log: str) -> bool:
    """No job step reported a failure: a stopped run exits 0 on every node."""
    return "Exited with exit code" not in log and "SignalException" not in log


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


def test_time_limit_warning_in_set_up_and_mid_run_requeues_up_to_max_requeues(slurm, fashion_root, tmp_path):
    """USR1 (what `--signal` sends before the time limit) while the workers start: requeued (nothing trained yet, or
    a few steps); mid-run in the next attempt: checkpoint, but slurm.max_requeues=1 is used up: not requeued, exit 75
    (and no step reports a failure)."""
    run_dir = tmp_path / "warned"
    # A long lead: on a loaded machine the workers may take minutes to start, and the script requeues without them
    # REQUEUE_MARGIN_S before the time limit (also a requeue, but not the path this test is after).
    job = submit(slurm, run_dir, "--nodes", "2", "--procs-per-node", "1", "--signal-lead", "300",
                 overrides=[f"data.root={fashion_root}", *PREEMPTIBLE_RUN, "slurm.max_requeues=1"])
    log = run_dir / f"slurm-{job}.out"
    wait_for(lambda: log.exists() and f"job {job} attempt 0:" in log.read_text(), slurm, job, "attempt 0 starts")
    slurm.cli("scancel", "--signal=USR1", "--batch", job)  # srun and torchrun are starting
    wait_for(lambda: f"job {job} attempt 1:" in log.read_text() and logged_steps(run_dir) >= 10, slurm, job,
             "attempt 1 trains")
    slurm.cli("scancel", "--signal=USR1", "--batch", job)
    assert slurm.wait_job(job) == "FAILED", log.read_text()
    text, fields = log.read_text(), slurm.job_fields(job)
    assert (fields["Restarts"], fields["ExitCode"]) == ("1", "75:0"), text
    assert text.count(f"dist-train: time limit (requeue 1 of at most 1): requeueing job {job}") == 1, text
    assert "dist-train: not requeued: slurm.max_requeues=1 used up" in text
    stops = re.findall(r"stopped by SIGUSR1 \(time-limit warning\) (before the first step|at step (\d+))", text)
    assert len(stops) == 2, text
    step = int(stops[1][1])  # attempt 1: mid-run
    assert (run_dir / "checkpoints" / f"step_{step}" / "checkpoint.json").is_file() and step < 300
    assert clean_exits(text), text


def test_preemption_checkpoints_requeues_and_resumes(slurm, fashion_root, tmp_path, uninterrupted_losses):
    """A job of the higher-priority partition preempts ours: SIGTERM to the workers, all ranks save at one step and
    stop within the grace time, the batch script requeues (SLURM would not: the job ended in time), and attempt 1
    resumes with the losses of an uninterrupted run."""
    run_dir = tmp_path / "preempted"
    job = submit(slurm, run_dir, "--nodes", "2", "--procs-per-node", "1",
                 overrides=[f"data.root={fashion_root}", *PREEMPTIBLE_RUN])
    wait_for(lambda: logged_steps(run_dir) >= 10, slurm, job, "training starts")
    slurm.cli("sbatch", "--partition=urgent", "--nodes=2", "--exclusive", "--output=/dev/null", "--wrap", "true")

    assert slurm.wait_job(job, timeout_s=400) == "COMPLETED", log_of(run_dir, job)
    log = log_of(run_dir, job)
    assert slurm.job_fields(job)["Restarts"] == "1" and f"job {job} attempt 1:" in log, log
    assert f"dist-train: preempted: requeueing job {job}" in log
    step = int(re.search(r"stopped by SIGTERM at step (\d+): checkpoint saved", log).group(1))
    assert 10 <= step < 300
    losses = train_losses(run_dir)
    assert set(range(step + 1, 301)) <= set(losses)  # the resumed attempt logged every remaining step
    assert_close_losses(losses, {s: uninterrupted_losses[s] for s in losses}, rel=1e-5)
    assert clean_exits(log), log


def test_scancel_checkpoints_and_cancels(slurm, fashion_root, tmp_path):
    run_dir = tmp_path / "cancelled"
    job = submit(slurm, run_dir, "--procs-per-node", "2", overrides=[f"data.root={fashion_root}", *PREEMPTIBLE_RUN])
    wait_for(lambda: logged_steps(run_dir) >= 10, slurm, job, "training starts")
    slurm.cli("scancel", job)
    assert slurm.wait_job(job) == "CANCELLED"
    log = log_of(run_dir, job)
    assert slurm.job_fields(job)["Restarts"] == "0" and "requeueing" not in log, log
    assert "dist-train: SIGTERM (scancel): workers checkpoint and stop; not requeued" in log
    step = int(re.search(r"stopped by SIGTERM at step (\d+): checkpoint saved", log).group(1))
    assert (run_dir / "checkpoints" / f"step_{step}" / "checkpoint.json").is_file() and step < 300


def test_sweep_as_a_slurm_job_array(slurm, tmp_path):
    """`dist-train sweep --slurm` submits one array task per trial; a time-limit warning to task 0 requeues that task
    only (its own id, not the array's); both complete and `--collect` ranks them by the eval metric each logged."""
    from support import read_metrics

    base = tmp_path / "sweep"
    args = ["sweep", RECIPES / "mlp_regression.yaml", f"run_dir={base}", "dataset.n_train=256", "dataset.n_eval=64",
            "model.hidden=8", "train.max_steps=4", "train.log_every=2", "train.eval_every=4",
            "--grid", "optimizer.lr=1e-4,1e-2", "--metric", "mse"]
    out = run_cli(*args, "--slurm", **slurm.env).stdout
    job = re.search(r"submitted job array (\d+)", out).group(1)
    assert " ".join(["dist-train", *map(str, args), "--collect"]) in out  # the follow-up command, `sweep` included
    log = base / "trial_0.log"
    wait_for(lambda: log.exists() and "attempt 0:" in log.read_text(), slurm, f"{job}_0", "task 0 starts")
    slurm.cli("scancel", "--signal=USR1", "--batch", f"{job}_0")
    for task in (0, 1):
        assert slurm.wait_job(f"{job}_{task}") == "COMPLETED", (base / f"trial_{task}.log").read_text()
    assert [slurm.job_fields(f"{job}_{task}")["Restarts"] for task in (0, 1)] == ["1", "0"]
    assert f"requeueing job {job}_0" in log.read_text()
    values = {i: [r["eval/mse"] for r in read_metrics(base / f"trial_00{i}") if "eval/mse" in r][-1] for i in (0, 1)}
    table = run_cli(*args, "--collect").stdout.strip().splitlines()
    assert table[0].startswith("rank") and len(table) == 3
    best = min(values, key=values.get)
    assert f"trial_00{best}" in table[1] and f"{values[best]:.6g}" in table[1]
