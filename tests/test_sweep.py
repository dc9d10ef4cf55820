"""Sweeps: the trial plan (grid crossed, random drawn, reproducible), the ranked table, a real 2-trial sweep, and
the SLURM array script run the way SLURM runs it (bash with SLURM_ARRAY_TASK_ID) for one task."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dist_train import sweep
from dist_train.errors import UsageError
from support import REPO, RECIPES, env, read_metrics, run_cli

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


def test_array_script_runs_a_trial_as_slurm_would(tmp_path):
    base = tmp_path / "sweep"
    trials = sweep.plan([("optimizer.lr", ["1e-3", "3e-3"])], [], None, 0, base)
    config = str(RECIPES / "mlp_regression.yaml")
    script, lines = sweep.array_script(config, TINY, trials, base, REPO, "t")
    assert "#SBATCH --array=0-1" in script
    base.mkdir()
    (base / "trials.txt").write_text(lines)
    (base / "a.sbatch").write_text(script)
    subprocess.run(["bash", str(base / "a.sbatch")], env=env(SLURM_ARRAY_TASK_ID=1), check=True,
                   capture_output=True, timeout=300)
    assert not (base / "trial_000").exists()
    assert "optimizer:\n  name: adamw\n  lr: 0.003" in (base / "trial_001" / "config.yaml").read_text()
    assert any("eval/loss" in m for m in read_metrics(base / "trial_001"))
