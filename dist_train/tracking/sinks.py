"""Open rank 0's trackers from the `tracking:` config: metrics.jsonl and the console always, TensorBoard and W&B
when configured. Optional packages are checked before any file is opened, so a missing package stops the job
before it touches run_dir (a resumed run's files stay as they were)."""

from __future__ import annotations

from pathlib import Path

from dist_train.config.schema import Config
from dist_train.tracking import Tracker, Trackers
from dist_train.tracking.console import ConsoleTracker
from dist_train.tracking.jsonl import JsonlTracker


def open_trackers(
    config: Config, run_dir: Path, run_id: str | None, resume_step: int | None = None
) -> tuple[Trackers, str | None]:
    """(trackers, W&B run id). `run_id` is the id restored from a checkpoint, if any; without one, the id an earlier
    process stored in run_dir is used, so a restarted job logs into the same W&B run. `resume_step`: the step a
    resumed run continues from (metrics.jsonl keeps the records up to it and appends)."""
    wandb_cfg = config.tracking.wandb
    use_wandb = wandb_cfg is not None and wandb_cfg.mode != "disabled"
    if use_wandb:
        from dist_train.tracking import wandb as wandb_sink

        wandb_sink.import_wandb()
    sinks: list[Tracker] = []
    try:
        if config.tracking.tensorboard:
            from dist_train.tracking.tensorboard import TensorBoardTracker

            sinks.append(TensorBoardTracker(run_dir / "tensorboard"))
        if use_wandb:
            tracker = wandb_sink.WandbTracker(wandb_cfg, config, run_dir, run_id or wandb_sink.read_run_id(run_dir))
            sinks.append(tracker)
            if tracker.run_id:
                run_id = tracker.run_id
                wandb_sink.write_run_id(run_dir, run_id)
        sinks += [JsonlTracker(run_dir / "metrics.jsonl", resume_step=resume_step),
                  ConsoleTracker(config.train.max_steps)]
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return Trackers(sinks), run_id
