"""`dist-train summary`: one table with config highlights, final/best metrics, time and throughput."""

from __future__ import annotations

import json

from support import read_metrics, run_cli

from dist_train.tracking.console import format_value


def test_summary_table(tracked_runs):
    run_dir = tracked_runs[1]
    table = dict(line.split("  ", 1) for line in run_cli("summary", run_dir).stdout.splitlines())
    table = {k.strip(): v.strip() for k, v in table.items()}
    assert table["recipe"] == "mlp_regression" and table["lr"] == "0.01" and table["steps"] == "20 / 20"
    records = read_metrics(run_dir)
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    best_step, best = min(losses, key=lambda s: s[1])
    final, best_shown = format_value("loss", losses[-1][1]), format_value("loss", best)
    assert table["train loss"] == f"final {final} | best {best_shown} (step {best_step})"
    mse = [r["eval/mse"] for r in records if "eval/mse" in r]
    final, best_shown = format_value("eval/mse", mse[-1]), format_value("eval/mse", min(mse))
    assert table["eval/mse"].startswith(f"final {final} | best {best_shown}")
    for row in ("train time (no eval)", "samples/s (median)", "step time (median)", "data wait share (median)",
                "peak memory"):
        assert table[row], row
    assert "W&B run id" not in table  # this run had no W&B
    assert json.dumps(table)  # plain strings only
