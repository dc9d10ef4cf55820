"""A hang named within the watchdog time: 2 processes under torchrun, rank 1 asleep inside its forward at step 6.
Every rank writes run_dir/hang/rank<R>.txt, one summary line names rank 1 and the line it sleeps on, the job exits
non-zero long before the sleep would end. The same run has rank 1 slower at every step: the straggler figures in
metrics.jsonl name it too."""

from __future__ import annotations

import time

from support import REPO, RECIPES, read_metrics, run_torchrun

SLOW = REPO / "tests" / "slow_rank_recipe.py"
SLEEP_LINE = next(i for i, line in enumerate(SLOW.read_text().splitlines(), 1) if "time.sleep(cfg.seconds)" in line)


def test_a_rank_asleep_in_its_forward_is_named_and_the_job_ends(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", RECIPES / "mlp_regression.yaml", f"recipe={SLOW}:SlowRank", f"run_dir={run_dir}",
            "dataset.n_train=256", "dataset.n_eval=32", "model.hidden=8", "train.max_steps=50", "train.log_every=1",
            "train.eval_every=1000", "slow.rank=1", "slow.every_step_s=0.2", "slow.step=6", "slow.seconds=300",
            "watchdog.timeout_s=3"]
    started = time.monotonic()
    r = run_torchrun(2, *args, check=False, timeout=280)
    assert r.returncode != 0 and "exitcode: 124" in r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
    assert time.monotonic() - started < 200  # far from the 300 s of the sleep, even on a loaded machine
    summaries = [line for line in r.stderr.splitlines() if line.startswith("dist-train: hang:")]
    assert len(summaries) == 1, r.stderr[-3000:]
    assert f"behind: rank 1 at step 6 (micro-batch 0 (forward, backward)), tests/slow_rank_recipe.py:{SLEEP_LINE} " \
           "in forward: time.sleep(cfg.seconds)" in summaries[0], summaries[0]
    assert "rank(s) 0 wait in gloo:all_reduce" in summaries[0]
    asleep = (run_dir / "hang" / "rank1.txt").read_text()
    assert f'slow_rank_recipe.py", line {SLEEP_LINE}, in forward' in asleep and "thread MainThread:" in asleep
    waiting = (run_dir / "hang" / "rank0.txt").read_text()
    assert "gloo:all_reduce" in waiting and "step 6: micro-batch 0" in waiting  # flight recorder and loop record

    figures = [m for m in read_metrics(run_dir) if "straggler/slowest_rank" in m]
    assert [m["step"] for m in figures] == [1, 2, 3, 4, 5]
    for m in figures[2:]:  # step 1 holds start-up; step 2 DDP's one-time bucket rebuild, a broadcast in the forward
        assert m["straggler/slowest_rank"] == 1 and m["straggler/max_s"] - m["straggler/min_s"] > 0.1, m
        assert m["straggler/min_s"] <= m["straggler/median_s"] <= m["straggler/max_s"]
