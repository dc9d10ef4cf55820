"""train.on_nan: a non-finite loss on any one rank is seen by all ranks alike; `stop` ends the run with the step and
no checkpoint of the bad state, `skip` drops that optimizer step and goes on."""

from __future__ import annotations

import json
import re

from checkpoint_support import train

RECIPE = "recipe=tests/checkpoint/nan_recipe.py:NanAtSteps"


def test_stop_exits_nonzero_naming_the_step_without_checkpointing_the_bad_state(tmp_path):
    run = tmp_path / "run"
    result = train(run, RECIPE, "nan.steps=[7]", "train.on_nan=stop", check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dist-train: error: train.on_nan=stop: the loss was not finite (nan/inf) at step 7;")
    assert f"last checkpoint: {run / 'checkpoints' / 'step_5'}" in last
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_5"]


def test_skip_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    run = tmp_path / "run"
    result = train(run, RECIPE, "nan.steps=[4]", "nan.rank=1", "train.on_nan=skip", "train.batch_size=8",
                   "train.max_steps=8", nproc=2)
    assert result.stdout.count("optimizer step skipped") == 1
    assert "step 4: non-finite loss on some rank; optimizer step skipped" in result.stdout
    records = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r}
    assert records[4]["loss"] == "nan"
    assert all(isinstance(records[s]["loss"], float) for s in (1, 2, 3, 5, 6, 7, 8))  # finite again: not applied
    assert "grad_norm" not in records[4]
    assert "done: 8 steps (1 skipped: non-finite loss)" in result.stdout


def test_skip_gives_up_after_too_many_steps_in_a_row(tmp_path):
    """The issue's run: SGD at lr 1e6 diverges for good; `skip` used to skip 298 of 300 steps and exit 0."""
    run = tmp_path / "run"
    result = train(run, "optimizer.name=sgd", "optimizer.lr=1e6", "train.on_nan=skip", "train.max_steps=300",
                   check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"dist-train: error: train\.on_nan=skip: the loss was not finite \(nan/inf\) for 11 steps in a row \(steps "
        r"(\d+)-(\d+)\), more than train\.max_consecutive_skipped_steps=10; stopped at step \2 with (\d+) of \2 steps "
        r"skipped, without saving \(last checkpoint: .*\)\. Lower optimizer\.lr or enable train\.clip_grad_norm",
        last), last
    assert int(re.search(r"stopped at step (\d+)", last).group(1)) < 30


def test_skip_gives_up_after_too_many_steps_in_all(tmp_path):
    run = tmp_path / "run"
    result = train(run, RECIPE, "nan.steps=[2, 4, 6, 8]", "train.on_nan=skip", "train.max_skipped_steps=3", check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dist-train: error: train.on_nan=skip: the loss was not finite (nan/inf) for 4 steps in "
                           "all, more than train.max_skipped_steps=3; stopped at step 8 with 4 of 8 steps skipped, "
                           f"without saving (last checkpoint: {run / 'checkpoints' / 'step_5'})")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_5"]
