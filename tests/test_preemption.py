"""Preemption outside SLURM: SIGTERM to ONE worker of a 2-process torchrun run -> both ranks agree on the same step,
save, exit 0 (so torchrun exits 0 too); the same command then resumes and the losses equal an uninterrupted run.
Needs Trainer.save_checkpoint and checkpoint.resume (the checkpoint issue). Under SLURM: tests/slurm/test_jobs.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from support import PREEMPTIBLE_RUN, REPO, RECIPES, assert_close_losses, env, run_torchrun, train_losses, worker_of_rank


def test_sigterm_to_one_rank_saves_on_all_and_resumes(fashion_root, tmp_path, uninterrupted_losses):
    args = ["train", RECIPES / "fashion_mnist_mlp.yaml", f"data.root={fashion_root}", f"run_dir={tmp_path}",
            *PREEMPTIBLE_RUN]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "dist_train",
           *map(str, args)]
    agent = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        rank1 = worker_of_rank(agent.pid, 1)
        deadline = time.monotonic() + 180
        while not (tmp_path / "metrics.jsonl").exists() or len(train_losses(tmp_path)) < 10:
            assert time.monotonic() < deadline and agent.poll() is None, "training did not get going"
            time.sleep(0.2)
        os.kill(rank1, signal.SIGTERM)  # rank 0 never gets a signal: it must learn it from the all-reduce
        out = agent.communicate(timeout=300)[0]
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, out[-3000:]
    step = int(re.search(r"stopped by SIGTERM at step (\d+): checkpoint saved \(.*step_\1\); run the same command "
                         r"again to resume", out).group(1))
    assert 10 <= step < 300 and len(train_losses(tmp_path)) < 300

    resumed = run_torchrun(2, *args).stdout
    assert "stopped by" not in resumed
    losses = train_losses(tmp_path)
    assert set(range(step + 1, 301)) <= set(losses)
    assert_close_losses(losses, {s: uninterrupted_losses[s] for s in losses}, rel=1e-5)


SLOW = REPO / "tests" / "slow_rank_recipe.py"


def interrupted_run(tmp_path, sleep_s: float, second_after_s: float | None):
    """One process whose step 3 sleeps `sleep_s` in its forward; Ctrl-C (SIGINT) arrives during that sleep, and a
    second one `second_after_s` later if given. Returns (exit code, stdout, stderr, seconds from first Ctrl-C)."""
    args = ["train", RECIPES / "mlp_regression.yaml", f"recipe={SLOW}:SlowRank", f"run_dir={tmp_path}",
            "dataset.n_train=256", "dataset.n_eval=32", "model.hidden=8", "train.max_steps=50", "train.log_every=1",
            "train.eval_every=1000", "slow.rank=0", "slow.step=3", f"slow.seconds={sleep_s}"]
    proc = subprocess.Popen([sys.executable, "-m", "dist_train", *map(str, args)], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "metrics.jsonl").exists() or 2 not in train_losses(tmp_path):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        first = time.monotonic()
        if second_after_s is not None:
            time.sleep(second_after_s)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err, time.monotonic() - first
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_saves_at_the_next_step_then_exits_130(tmp_path):
    code, out, err, _ = interrupted_run(tmp_path, sleep_s=2, second_after_s=None)
    assert code == 130, out + err
    assert err.count("Ctrl-C: saving a checkpoint at the next step boundary, then stopping") == 1, err
    step = int(re.search(r"stopped by Ctrl-C at step (\d+): checkpoint saved \((.*)\); run the same command again "
                         r"to resume", out).group(1))
    assert step >= 3 and (tmp_path / "checkpoints" / f"step_{step}" / "checkpoint.json").is_file()
    assert max(train_losses(tmp_path)) == step < 50


def test_second_ctrl_c_exits_at_once_without_saving(tmp_path):
    code, out, err, took = interrupted_run(tmp_path, sleep_s=60, second_after_s=1.5)
    assert code == 130 and "second Ctrl-C: stopping now, without saving" in err, out + err
    assert took < 30  # not the 60 s the step sleeps
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").glob("step_*"))
