"""Sweeps: the trial plan (grid crossed, random drawn, reproducible), the ranked table, a real 2-trial sweep, and
the SLURM array script (the sbatch template with --array)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dist_train import sweep
from dist_train.errors import UsageError
from support import RECIPES, read_metrics, run_cli

TINY = ["dataset.n_train=256", "dataset.n_eval=64", "model.hidden=8", "train.max_steps=4", "train.log_every=2",
        "train.eval_every=4", "scheduler.warmup_steps=0"]


def test_plan_crosses_the_grid_and_draws_random_values_reproducibly():
    grid = [sweep.parse_axis("optimizer.lr=1e-3,3e-3", "--grid"), sweep.parse_axis("seed=0,1", "--grid")]
    rand = [sweep.parse_axis("train.batch_size=32,64,128", "--random")]
    trials = sweep.plan(grid, rand, None, 0, Path("runs/s"))
    assert [t.overrides[:2] for t in trials] == [["optimizer.lr=1e-3", "seed=0"], ["optimizer.lr=1e-3", "seed=1"],
                                                 ["optimizer.lr=3e-3", "seed=0"], ["optimizer.lr=3e-3", "seed=1"]]
    assert [t.overrides[-1] for t in trials] == [f"run_dir=runs/s/trial_00{i}" for i in range(4)]
    assert all(t.overrides[2].split("=")[1] in ("32", "64", "128") for t in trials)
    again = sweep.plan(grid, rand, None, 0, Path("runs/s"))
    assert [t.overrides for t in again] == [t.overrides for t in trials]
    six = sweep.plan(grid[:1], rand, 6, 0, Path("runs/s"))  # --trials cycles the grid
    assert [t.overrides[0] for t in six] == ["optimizer.lr=1e-3", "optimizer.lr=3e-3"] * 3
    assert len({t.overrides[0] for t in sweep.plan([], rand, 30, 1, Path("r"))}) == 3


@pytest.mark.parametrize("spec, message", [
    ("optimizer.lr", r"expected key=v1,v2"), ("optimizer.lr=1e-3,", r"expected key=v1,v2"),
    ("run_dir=a,b", r"run_dir is set per trial"),
])
def test_bad_axes(spec, message):
    with pytest.raises(UsageError, match=message):
        sweep.parse_axis(spec, "--grid")


def test_duplicate_key_across_axes():
    with pytest.raises(UsageError, match=r"key optimizer.lr is given more than once"):
        sweep.plan([("optimizer.lr", ["1"])], [("optimizer.lr", ["2"])], None, 0, Path("r"))


def test_ranked_table_best_first_failed_last():
    trials = sweep.plan([("optimizer.lr", ["1", "2", "3"])], [], None, 0, Path("r"))
    table = sweep.ranked_table(trials, {0: 0.5, 1: None, 2: 0.9}, ["optimizer.lr"], "accuracy", "max").splitlines()
    assert table[0].split() == ["rank", "trial", "eval/accuracy", "(max)", "optimizer.lr"]
    assert [line.split()[1] for line in table[1:]] == ["trial_002", "trial_000", "trial_001"]
    assert table[3].split()[2] == "-"


def test_sweep_runs_two_trials_and_ranks_them(tmp_path):
    base = tmp_path / "sweep"
    r = run_cli("sweep", RECIPES / "mlp_regression.yaml", f"run_dir={base}", *TINY,
                "--grid", "optimizer.lr=1e-4,1e-2", "--metric", "mse", timeout=600)
    values = {}
    for i in (0, 1):
        evals = [m["eval/mse"] for m in read_metrics(base / f"trial_00{i}") if "eval/mse" in m]
        values[i] = evals[-1]
    lines = r.stdout.strip().splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("rank"))):]
    best = min(values, key=values.get)
    assert table[1].split()[:3] == ["1", f"trial_00{best}", f"{values[best]:.6g}"]
    assert (base / "sweep.txt").read_text().strip() == "\n".join(table)
    collected = run_cli("sweep", RECIPES / "mlp_regression.yaml", f"run_dir={base}", *TINY,
                        "--grid", "optimizer.lr=1e-4,1e-2", "--metric", "mse", "--collect")
    assert collected.stdout.strip() == "\n".join(table)


def test_bad_trial_config_fails_before_any_trial_runs(tmp_path):
    r = run_cli("sweep", RECIPES / "mlp_regression.yaml", f"run_dir={tmp_path}/s", "--grid",
                "optimizer.lr=1e-3,-1", check=False)
    assert r.returncode == 2 and "optimizer.lr: must be > 0, got -1" in r.stderr
    assert not (tmp_path / "s").exists()


def test_slurm_array_uses_the_batch_script_of_sbatch(tmp_path):
    """One home for SLURM scripts: the array is the sbatch template plus `--array` and a trials file whose line i+1
    holds task i's overrides. (Run on a real cluster, with a requeued task: tests/slurm/test_jobs.py.)"""
    from dist_train.cluster.slurm import JobSpec, render

    trials = sweep.plan([("optimizer.lr", ["1e-3", "3e-3"])], [], None, 0, tmp_path / "s")
    lines = sweep.trials_file(trials).splitlines()
    assert lines == [f"optimizer.lr=1e-3 run_dir={tmp_path}/s/trial_000",
                     f"optimizer.lr=3e-3 run_dir={tmp_path}/s/trial_001"]
    script = render(JobSpec(array_file=str(tmp_path / "trials.txt"), array_size=2), ["c.yaml"])
    assert script.startswith(render(JobSpec(), ["c.yaml"]).split("#SBATCH")[0])  # same header
    for line in ("#SBATCH --array=0-1", "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "trap on_warning USR1",
                 'job=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}', 'scontrol requeue "$job"'):
        assert line in script, line
