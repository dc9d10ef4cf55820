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
from pathlib import Path

from support import PREEMPTIBLE_RUN, REPO, RECIPES, assert_close_losses, env, run_torchrun, train_losses


def worker_of_rank(agent_pid: int, rank: int, timeout_s: float = 120) -> int:
    """The pid of torchrun's worker with RANK=rank (its children, read from /proc)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split():
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(child)
        time.sleep(0.2)
    raise AssertionError(f"no worker with RANK={rank} under torchrun {agent_pid}")


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
