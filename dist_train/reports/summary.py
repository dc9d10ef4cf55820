"""`dist-train summary RUN_DIR`: one table of a run, read from its config.yaml, run.json and metrics.jsonl (no
service needed): config highlights, what actually ran (strategy, world size, global batch), whether the run is
complete (or stopped early, preempted, failed, or still running/died), final and best metrics, time and throughput.

"Best" is the lowest value, except for metrics whose name says higher is better (accuracy, f1, auc, ...).
Training time is the sum of the logged step times, so it leaves out evaluation, checkpoint stalls and any time
between a job's restarts; throughput figures are medians over log windows (the first window, which includes
warm-up, is left out when there are more). Goodput (dist_train.tracking.goodput) is the share of the wall time,
over all attempts, spent in training steps; `badput` says where the rest went.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import yaml

from dist_train.tracking import run_record
from dist_train.tracking.console import format_duration, format_value
from dist_train.tracking.goodput import PARTS, run_goodput, shares
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
    ran = run_record.read(run_dir)
    rows = [("run", str(run_dir))]
    for label, key in (("recipe", "recipe"), ("strategy", "strategy"), ("precision", "train.precision"),
                       ("batch size (per rank)", "train.batch_size"), ("grad accum", "train.grad_accum"),
                       ("optimizer", "optimizer.name"), ("lr", "optimizer.lr"), ("scheduler", "scheduler.name"),
                       ("seed", "seed")):
        value = ran.get("strategy") if key == "strategy" and ran.get("strategy") else _get(cfg, key)
        if key == "train.grad_accum" and ran.get("grad_accum"):
            value = ran["grad_accum"]  # what ran: a resume on another world size may have changed it
        if value is not None:
            rows.append((label, format_value(key, value)))
    if ran.get("world_size"):
        rows.append(("world size", str(ran["world_size"])))
        rows.append(("global batch", str(ran["global_batch"])))
    last_step = max(r["step"] for r in records)
    max_steps = _get(cfg, "train.max_steps")
    rows.append(("steps", f"{last_step} / {max_steps}" if max_steps else str(last_step)))
    rows += _status_rows(ran, last_step, max_steps)

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
        seconds = sum(t * (s - prev) for prev, s, t in zip([0] + steps[:-1], steps, step_times, strict=False))
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
    rows += _goodput_rows(ran.get("attempts") or [], records)
    run_id = read_run_id(run_dir)
    if run_id:
        rows.append(("W&B run id", run_id))
    return rows


def _status_rows(ran: dict, last_step: int, max_steps) -> list[tuple[str, str]]:
    """How the run stands: its last attempt's end, marked INCOMPLETE unless train.max_steps was reached."""
    attempts = ran.get("attempts") or []
    if not attempts:
        return [("status", "unknown (no run.json: written by dist-train 0.2 and later)")]
    last = attempts[-1]
    status = last.get("status", "unknown")
    if status == "complete":
        shown = "complete"
    elif status == "running":
        shown = ("INCOMPLETE: running, or died without a word (killed, node lost) after step "
                 f"{last_step}; run the same command again to resume")
    else:
        detail = f": {last['detail']}" if last.get("detail") else ""
        final = "" if status == "stopped early" else "INCOMPLETE: "
        shown = f"{final}{status} at step {last.get('last_step', last_step)}{detail}"
    rows = [("status", shown), ("attempts", str(len(attempts)))]
    rows.append(("started", attempts[0].get("started", "?")))
    if last.get("ended"):
        rows.append(("ended", last["ended"]))
    wall = sum(a.get("elapsed_s", 0.0) for a in attempts)
    if wall:
        rows.append(("wall time (all attempts)", format_duration(wall)))
    return rows


def _goodput_rows(attempts: list[dict], records: list[dict]) -> list[tuple[str, str]]:
    """Goodput over all attempts (run.json), else the last one logged (metrics.jsonl); each save's stall."""
    seconds = run_goodput(attempts)
    if seconds is not None:
        figures, scope = shares(seconds), "all attempts"
    else:
        logged = [r for r in records if "goodput" in r]
        if not logged:
            return []
        figures, scope = logged[-1], "last attempt"
    rows = [("goodput", f"{100 * figures['goodput']:.1f}% of the wall time in training steps ({scope})")]
    badput = [f"{part.replace('_', ' ')} {100 * figures[f'badput/{part}']:.1f}%"
              for part in (*PARTS, "restarts") if f"badput/{part}" in figures]
    if badput:
        rows.append(("badput", " | ".join(badput)))
    stalls = series(records, "checkpoint_stall_s")[1]
    if stalls:
        rows.append(("checkpoint stall", f"median {statistics.median(stalls) * 1000:.3g} ms | max "
                                         f"{max(stalls) * 1000:.3g} ms | {len(stalls)} saves"))
    return rows


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
