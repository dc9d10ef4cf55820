"""torchrun on two "nodes" of this machine (two agents, c10d rendezvous): after a worker is killed, the agents restart
with different restart counts and the new workers must still find each other.

The race the issue reproduced under CPU load, forced here instead: rank 0 sleeps inside its forward (not in a
collective, so it does not fail when its peer dies) while rank 1's worker is SIGKILLed. Rank 1's agent restarts on
the failure (TORCHELASTIC_RESTART_COUNT 1); rank 0's agent sees the waiting node first and restarts on the
membership change, which does not count (TORCHELASTIC_RESTART_COUNT 0). A per-count store namespace then splits the
new workers into two worlds that wait for each other forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from support import REPO, RECIPES, env, free_port, read_metrics, worker_of_rank

TESTS = REPO / "tests"


def test_two_node_restart_with_different_restart_counts_reconnects(tmp_path):
    run_dir = tmp_path / "run"
    slept = tmp_path / "slept"
    overrides = [f"recipe={TESTS / 'slow_rank_recipe.py'}:SlowRank", f"run_dir={run_dir}", "dataset.n_train=256",
                 "dataset.n_eval=32", "model.hidden=8", "train.max_steps=10", "train.log_every=1",
                 "train.eval_every=1000", "train.batch_size=16", "checkpoint.every=2", "slow.rank=0", "slow.step=4",
                 "slow.seconds=6", f"slow.once_file={slept}"]
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [subprocess.Popen(
        [sys.executable, "-m", "dist_train", "launch", RECIPES / "mlp_regression.yaml", *overrides, "--nodes", "2",
         "--nproc-per-node", "1", "--rdzv-endpoint", endpoint, "--rdzv-id", "restarts", "--max-restarts", "1"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        rank1 = worker_of_rank([a.pid for a in agents], 1)
        deadline = time.monotonic() + 120
        while not slept.exists():  # rank 0 is now asleep in the forward of its step 4
            assert time.monotonic() < deadline and all(a.poll() is None for a in agents), "training did not start"
            time.sleep(0.05)
        os.kill(rank1, signal.SIGKILL)
        outputs = [a.communicate(timeout=150)[0] for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()  # a hang: the agents would wait for the collective timeout (600 s)
    assert [a.returncode for a in agents] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    starts = (run_dir / "starts.txt").read_text().split("\n")[:-1]
    assert len(starts) == 4 and sorted(line.split()[1] for line in starts[2:]) == ["0", "1"], starts  # the race
    steps = [r["step"] for r in read_metrics(run_dir) if "loss" in r]
    assert steps == list(range(1, 11)), steps
