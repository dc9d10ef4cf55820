"""run_dir/metrics.jsonl when the disk fills up: the run stops with one line (exit 1) naming the file and the step,
the checkpoints already committed stay intact, and once there is room again the same command resumes and the file
holds every step once."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from dist_train.checkpoint.integrity import verify
from support import RECIPES, run_cli

PAGE = 4096
ARGS = ["train.max_steps=60", "train.log_every=1", "train.eval_every=1000", "dataset.n_train=200", "dataset.n_eval=32",
        "dataset.in_features=8", "model.hidden=16", "train.batch_size=16", "checkpoint.every=5"]


def mount_tmpfs(path, size: int) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root")
def test_full_disk_while_writing_metrics_stops_with_one_line_and_keeps_the_checkpoints(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # run_dir on a tmpfs of 6 pages: run.lock, config.yaml, run.json (and its .part while rewritten) take 4, so
    # metrics.jsonl (~270 bytes a line) fills the other 2 at about step 30 of 60. Checkpoints have a tmpfs of their own.
    mount_tmpfs(run, 6 * PAGE)
    try:
        (run / "checkpoints").mkdir()
        mount_tmpfs(run / "checkpoints", 16 * 1024 * 1024)
        try:
            failed = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run}", *ARGS, check=False)
            assert failed.returncode == 1, failed.stderr[-3000:]
            [line] = failed.stderr.strip().splitlines()
            match = re.fullmatch(
                rf"dist-train: error: metrics: writing {re.escape(str(run / 'metrics.jsonl'))} failed at step "
                r"(\d+): No space left on device; the run stops \(its checkpoints are intact: free the space and run "
                r"the same command again to resume\)", line)
            assert match, line
            stopped_at = int(match.group(1))
            assert 6 <= stopped_at < 60
            done = sorted(int(p.name.removeprefix("step_")) for p in (run / "checkpoints").glob("step_*"))
            assert done and max(done) < stopped_at
            for step in done:
                assert verify(run / "checkpoints" / f"step_{step}").step == step  # every checksum matches

            subprocess.run(["mount", "-o", "remount,size=1m", str(run)], check=True)  # room again
            resumed = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run}", *ARGS)
            assert f"(step {max(done)})" in resumed.stdout and "done: 60 steps" in resumed.stdout
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            assert [r["step"] for r in records if "loss" in r] == list(range(1, 61))
        finally:
            subprocess.run(["umount", str(run / "checkpoints")], check=True)
    finally:
        subprocess.run(["umount", str(run)], check=True)
