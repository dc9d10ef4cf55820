"""Goodput: each attempt's wall time split into training steps, start-up, data wait, eval and checkpoint stalls
(metrics.jsonl, run.json, `dist-train summary`), and across attempts the time lost to restarts."""

from __future__ import annotations

import json

import pytest
from support import RECIPES, read_metrics, run_cli

from dist_train.config import load
from dist_train.runner import run
from dist_train.tracking.goodput import PARTS, run_goodput, shares

SHARES = ["goodput", *(f"badput/{part}" for part in PARTS)]


def train(run_dir, *overrides):
    """A short in-process run (start-up counts from the call); its metrics.jsonl records and run.json attempt."""
    config = load(RECIPES / "mlp_regression.yaml", [
        f"run_dir={run_dir}", "train.max_steps=12", "train.log_every=6", "train.eval_every=6", "train.batch_size=16",
        "dataset.n_train=512", "dataset.n_eval=64", "scheduler.warmup_steps=0", *overrides])
    run(config)
    return read_metrics(run_dir), json.loads((run_dir / "run.json").read_text())["attempts"][-1]


def test_shares_add_up_and_a_save_every_step_shows_in_the_checkpoint_share(tmp_path):
    train(tmp_path / "warm_up", "train.max_steps=2")  # the first run of a process imports the recipe and DCP
    runs = {every: train(tmp_path / f"every_{every}", f"checkpoint.every={every}") for every in (1, 100)}
    for every, (records, attempt) in runs.items():
        goodput = [r for r in records if "goodput" in r]
        assert [r["step"] for r in goodput] == [6, 12, 12]  # log steps, then the attempt's final figures
        for r in goodput:
            assert all(0 <= r[k] <= 1 for k in SHARES) and sum(r[k] for k in SHARES) == pytest.approx(1)
            assert r["goodput"] > 0 and r["badput/startup"] > 0
        stalls = [r["checkpoint_stall_s"] for r in records if "checkpoint_stall_s" in r]
        assert len(stalls) == (12 if every == 1 else 1) and all(s > 0 for s in stalls)  # each save, the last too
        # run.json keeps the same seconds: every save's stall is in the checkpoint part (with the end of the run's
        # wait for the last files to be flushed, which no save record carries), the parts add up.
        seconds = attempt["time_s"]
        assert sum(stalls) - 0.002 <= seconds["checkpoint"] < sum(stalls) + 0.5
        assert seconds["train"] + sum(seconds[p] for p in PARTS) == pytest.approx(attempt["elapsed_s"], abs=0.01)
        assert seconds["eval"] > 0
    every_step, at_end = (runs[every][0][-1] for every in (1, 100))
    assert every_step["badput/checkpoint"] > at_end["badput/checkpoint"]


def test_throughput_figures_leave_stalls_out(tmp_path):
    """step_time_s measures training steps: in a window of 6 steps with 6 saves and an evaluation it stays below
    the mean stall (with the stalls in, it would be above it)."""
    records, _ = train(tmp_path / "run", "checkpoint.every=1")
    window = [r for r in records if "step_time_s" in r][-1]  # steps 7-12, after the eval and save of step 6
    stalls = [r["checkpoint_stall_s"] for r in records if "checkpoint_stall_s" in r and 6 <= r["step"] < 12]
    assert len(stalls) == 6 and window["step_time_s"] < sum(stalls) / 6


def test_cli_run_counts_start_up_from_the_process_start_and_summary_shows_it(tracked_runs):
    run_dir = tracked_runs[0]
    attempt = json.loads((run_dir / "run.json").read_text())["attempts"][-1]
    # The interpreter, torch's import and the set-up are start-up: more than the second torch's import takes.
    assert attempt["time_s"]["startup"] > 0.3
    final = read_metrics(run_dir)[-1]
    assert final["goodput"] == pytest.approx(attempt["time_s"]["train"] / attempt["elapsed_s"], abs=0.01)
    # The summary's figures come from run.json (all attempts; here one).
    table = dict(line.split("  ", 1) for line in run_cli("summary", run_dir).stdout.splitlines())
    table = {k.strip(): v.strip() for k, v in table.items()}
    figures = shares(run_goodput([attempt]))
    assert figures["goodput"] == pytest.approx(final["goodput"], abs=0.01)
    assert table["goodput"] == f"{100 * figures['goodput']:.1f}% of the wall time in training steps (all attempts)"
    assert table["badput"].startswith(f"startup {100 * figures['badput/startup']:.1f}% | data wait")
    assert table["checkpoint stall"].endswith("| 1 saves")


def attempt(started, ended, start_step, last_step, train_s, status="complete", **parts):
    return {"started": f"2026-01-01T00:{started}+00:00", "ended": f"2026-01-01T00:{ended}+00:00",
            "start_step": start_step, "last_step": last_step, "status": status,
            "elapsed_s": _seconds(ended) - _seconds(started),
            "time_s": {"train": train_s, "startup": 10.0, "data_wait": 0.0, "eval": 0.0, "checkpoint": 0.0,
                       "other": 0.0, **parts}}


def _seconds(mm_ss: str) -> float:
    minutes, seconds = mm_ss.split(":")
    return 60 * int(minutes) + float(seconds)


def test_restarts_are_the_gaps_between_attempts_and_the_steps_trained_twice():
    # Attempt 1 trained steps 0-300 in 80 s, failed; attempt 2 resumed from the checkpoint of step 200, 30 s later.
    failed = attempt("00:00", "01:30", 0, 300, 80.0, status="failed")
    resumed = attempt("02:00", "03:00", 200, 400, 50.0)
    seconds = run_goodput([failed, resumed])
    assert seconds["wall"] == 180
    lost = 80.0 * 100 / 300  # steps 201-300 were trained again
    assert seconds["restarts"] == pytest.approx(30 + lost)
    assert seconds["train"] == pytest.approx(80 + 50 - lost)
    assert seconds["startup"] == 20
    # Without run.json times (older runs): nothing to say.
    assert run_goodput([{"started": "2026-01-01T00:00:00+00:00", "status": "complete"}]) is None
