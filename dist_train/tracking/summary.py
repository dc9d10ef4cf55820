"""`dist-train summary RUN_DIR`: one table of a run, read from its config.yaml and metrics.jsonl (no service needed):
config highlights, final and best metrics, training time and throughput.

"Best" is the lowest value, except for metrics whose name says higher is better (accuracy, f1, auc, ...).
Training time is the sum of the logged step times, so it leaves out evaluation and any time between a job's
restarts; throughput figures are medians over log windows (the first window, which includes warm-up, is left out
when there are more).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import yaml

from dist_train.tracking.console import format_duration, format_value
from dist_train.tracking.jsonl import read_run_metrics, series
from dist_train.tracking.wandb import read_run_id

HIGHER_IS_BETTER = ("acc", "f1", "auc", "precision", "recall", "iou", "bleu", "score", "mfu")


def _config(run_dir: Path) -> dict:
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _get(data: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def summary_rows(run_dir: str | Path) -> list[tuple[str, str]]:
    run_dir = Path(run_dir)
    records = read_run_metrics(run_dir)
    cfg = _config(run_dir)
    rows = [("run", str(run_dir))]
    for label, key in (("recipe", "recipe"), ("strategy", "strategy"), ("precision", "train.precision"),
                       ("batch size (per rank)", "train.batch_size"), ("grad accum", "train.grad_accum"),
                       ("optimizer", "optimizer.name"), ("lr", "optimizer.lr"), ("scheduler", "scheduler.name"),
                       ("seed", "seed")):
        value = _get(cfg, key)
        if value is not None:
            rows.append((label, format_value(key, value)))
    last_step = max(r["step"] for r in records)
    max_steps = _get(cfg, "train.max_steps")
    rows.append(("steps", f"{last_step} / {max_steps}" if max_steps else str(last_step)))

    metric_keys = ["loss"] + sorted({k for r in records for k in r if k.startswith("eval/")})
    for key in metric_keys:
        steps, values = series(records, key)
        if not values:
            continue
        higher = any(word in key.split("/")[-1] for word in HIGHER_IS_BETTER)
        best = (max if higher else min)(range(len(values)), key=values.__getitem__)
        rows.append((key if key != "loss" else "train loss",
                     f"final {format_value(key, values[-1])} | best {format_value(key, values[best])} "
                     f"(step {steps[best]})"))

    steps, step_times = series(records, "step_time_s")
    if step_times:
        # Each train record covers the steps since the previous one.
        seconds = sum(t * (s - prev) for prev, s, t in zip([0] + steps[:-1], steps, step_times))
        rows.append(("train time (no eval)", format_duration(seconds)))
    for label, key in (("samples/s", "samples_per_s"), ("tokens/s", "tokens_per_s"), ("step time", "step_time_s"),
                       ("data wait share", "data_wait_share"), ("mfu", "mfu")):
        values = series(records, key)[1]
        if values:
            typical = statistics.median(values[1:] if len(values) > 1 else values)
            shown = f"{typical * 1000:.3g} ms" if key == "step_time_s" else format_value(key, typical)
            rows.append((label + " (median)", shown))
    peak = series(records, "peak_mem_gib")[1]
    if peak:
        rows.append(("peak memory", f"{max(peak):.3g} GiB"))
    run_id = read_run_id(run_dir)
    if run_id:
        rows.append(("W&B run id", run_id))
    return rows


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
