"""Weights & Biases sink (rank 0 only; wandb is imported only when `tracking.wandb` is set).

One training job is one W&B run, whatever happens to its processes: the run id is kept in run_dir/tracking.json
and in every checkpoint (as `Trainer.tracking_run_id`), and a restarted job (auto resume, SLURM requeue) opens
W&B with that id and resume="allow", so the history continues instead of a new run starting at step 0.

Offline (`mode: offline`, or no network on the compute nodes) writes the run under run_dir/wandb/offline-run-*;
`wandb sync RUN_DIR/wandb/offline-run-*` uploads it later (several folders of one resumed run land in one run).
Online mode without an API key (no WANDB_API_KEY, no `wandb login`) does not stop a job that may have waited
hours in a queue: it falls back to offline with a warning that says how to upload. The API key is never printed
and never written to run_dir (only the resolved config, which holds no credentials, is logged).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from dist_train.config.schema import Config, WandbConfig
from dist_train.errors import UsageError
from dist_train.tracking import Tracker

RUN_ID_FILE = "tracking.json"


def read_run_id(run_dir: Path) -> str | None:
    """The W&B run id an earlier process of this job stored in run_dir, if any."""
    try:
        return json.loads((run_dir / RUN_ID_FILE).read_text()).get("wandb_run_id")
    except (OSError, ValueError, AttributeError):
        return None


def write_run_id(run_dir: Path, run_id: str) -> None:
    tmp = run_dir / (RUN_ID_FILE + ".tmp")
    tmp.write_text(json.dumps({"wandb_run_id": run_id}) + "\n")
    os.replace(tmp, run_dir / RUN_ID_FILE)  # atomic: a job killed mid-write never leaves a torn file


def import_wandb():
    try:
        import wandb
    except ImportError:
        raise UsageError(
            "tracking.wandb: the wandb package is not installed; install it with "
            "pip install 'dist-train[wandb]' (or pip install wandb), or remove tracking.wandb from the config"
        ) from None
    return wandb


def has_credentials(wandb) -> bool:
    """Whether wandb would find an API key without asking: env vars, ~/.netrc (`wandb login`), or its settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    try:
        from wandb.sdk.lib.wbauth import wbnetrc

        if wbnetrc.read_netrc_auth(host=host):
            return True
    except Exception:  # wandb internals moved: fall back to the standard library's netrc reader
        import netrc
        from urllib.parse import urlparse

        try:
            if netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(host).hostname or host):
                return True
        except (OSError, netrc.NetrcParseError):
            pass
    try:
        return bool(wandb.setup().settings.api_key)
    except Exception:
        return False


class WandbTracker(Tracker):
    def __init__(self, cfg: WandbConfig, config: Config, run_dir: Path, run_id: str | None):
        from dist_train.config import resolved_dict

        wandb = import_wandb()
        # WANDB_MODE in the environment wins over the config, as it does everywhere else in wandb.
        mode = os.environ.get("WANDB_MODE") or cfg.mode
        if mode == "online" and not has_credentials(wandb):
            mode = "offline"
            print(
                "dist-train: warning: tracking.wandb.mode is online but no W&B API key was found (set WANDB_API_KEY "
                f"or run `wandb login`); logging offline under {run_dir / 'wandb'} instead: upload it later with "
                f"wandb sync {run_dir / 'wandb'}/offline-run-*",
                file=sys.stderr, flush=True,
            )
        try:
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, name=cfg.name, tags=cfg.tags or None,
                mode=mode, dir=str(run_dir), id=run_id, resume="allow" if run_id else None,
                config=resolved_dict(config),
            )
        except Exception as e:  # bad entity/project, rejected key, unreachable server: one line, not a traceback
            raise UsageError(f"tracking.wandb: wandb.init failed ({mode} mode): {type(e).__name__}: {e}") from None
        self.run_id: str | None = None if mode == "disabled" else self.run.id

    def log(self, metrics, step):
        self.run.log(dict(metrics), step=step)

    def close(self):
        if self.run is not None:
            self.run.finish()
            self.run = None
