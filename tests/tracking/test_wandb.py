"""W&B for real, in offline mode (no network): what a run writes is read back from wandb's own `.wandb` record
file (checksummed log of wandb protobuf `Record`s, see support.read_wandb_records)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import (REPO, RECIPES, env, read_metrics, read_wandb_records, run_cli, run_torchrun, wandb_config,
                     wandb_history)

pytest.importorskip("wandb", reason="wandb is an optional extra")

# A syntactically valid key that must never show up in run_dir or on the console.
FAKE_KEY = "dtfakekey" + "0123456789abcdef" * 3


def wandb_env(tmp_path: Path, **extra) -> dict:
    """No credentials or settings from the machine: a private HOME and wandb config/cache dirs."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": home, "WANDB_CONFIG_DIR": home / "wandb-config", "WANDB_CACHE_DIR": home / "wandb-cache",
            "WANDB_DATA_DIR": home / "wandb-data", "NETRC": home / "netrc", "WANDB_API_KEY": "",
            **extra}


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def run_file(folder: Path) -> Path:
    (path,) = folder.glob("run-*.wandb")
    return path


def run_ids(records) -> list[str]:
    return [r.run.run_id for r in records if r.WhichOneof("record_type") == "run"]


def train_args(run_dir: Path, max_steps: int, *extra) -> list:
    return ["train", RECIPES / "mlp_regression.yaml", "recipe=tests/tracking/token_recipe.py:TokenCountingRegression",
            f"run_dir={run_dir}",
            f"train.max_steps={max_steps}", "train.log_every=5", "train.eval_every=10", "train.batch_size=16",
            "tracking.wandb.project=dist-train-tests", "tracking.wandb.tags=[ci, offline]", *extra]


def test_two_processes_log_once_and_a_restarted_job_continues_the_same_run(tmp_path):
    run_dir = tmp_path / "run"
    first = run_torchrun(2, *train_args(run_dir, 20, "tracking.wandb.mode=offline"), timeout=600,
                         **wandb_env(tmp_path, WANDB_API_KEY=FAKE_KEY))

    # Only rank 0 logged: one offline run, in run_dir, and nothing written by another rank anywhere else.
    (folder,) = offline_runs(run_dir)
    assert not (REPO / "wandb").exists()
    records = read_wandb_records(run_file(folder))
    (run_id,) = run_ids(records)
    assert folder.name.endswith("-" + run_id)
    assert json.loads((run_dir / "tracking.json").read_text()) == {"wandb_run_id": run_id}
    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.project == "dist-train-tests" and list(run_record.tags) == ["ci", "offline"]

    # The resolved config is the run config.
    config = wandb_config(records)
    config.pop("_wandb")  # wandb's own bookkeeping
    assert config == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["recipe"].endswith("tests/tracking/token_recipe.py:TokenCountingRegression")
    assert config["train"]["max_steps"] == 20 and config["train"]["batch_size"] == 16
    assert config["tracking"]["wandb"]["tags"] == ["ci", "offline"]

    # The history is the metrics rank 0 logged (train and eval, at their steps), with the throughput figures.
    history = wandb_history(records)
    logged = read_metrics(run_dir)
    train_rows = [h for h in history if "loss" in h]
    assert [h["_step"] for h in train_rows] == [5, 10, 15, 20]
    for row, record in zip(train_rows, [r for r in logged if "loss" in r], strict=False):
        assert row["loss"] == pytest.approx(record["loss"])
        assert row["tokens_per_s"] == pytest.approx(7 * row["samples_per_s"])  # summed over both ranks
        assert 0 <= row["data_wait_share"] <= 1 and row["peak_mem_gib"] > 0
    assert [h["_step"] for h in history if "eval/mse" in h] == [10, 20]
    # Goodput and the checkpoint stall reach W&B too (the last save and the final figures are logged at step 20).
    final = [r for r in logged if "goodput" in r][-1]
    at_end = {k: v for h in history if h["_step"] == 20 for k, v in h.items()}
    assert at_end["goodput"] == pytest.approx(final["goodput"]) and at_end["checkpoint_stall_s"] > 0

    # The API key is not in run_dir (config, history, console capture, wandb's debug logs) nor on the console.
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
    assert FAKE_KEY not in first.stdout + first.stderr

    # A resumed job (a new process in the same run_dir, as after a SLURM requeue: it resumes the step-20 checkpoint
    # and trains on to 30) logs into the same run. WANDB_MODE=offline in the environment wins over the config's mode.
    run_cli(*train_args(run_dir, 30, "tracking.wandb.mode=online"), timeout=600,
            **wandb_env(tmp_path, WANDB_API_KEY=FAKE_KEY, WANDB_MODE="offline"))
    folders = offline_runs(run_dir)
    assert len(folders) == 2 and all(f.name.endswith("-" + run_id) for f in folders)
    resumed = read_wandb_records(run_file(folders[1]))
    assert run_ids(resumed) == [run_id]
    assert [h["_step"] for h in wandb_history(resumed) if "loss" in h] == [25, 30]
    assert json.loads((run_dir / "tracking.json").read_text()) == {"wandb_run_id": run_id}


def test_run_id_from_a_checkpoint_wins_over_run_dir(tmp_path):
    # The checkpoint code restores Trainer.tracking_run_id before the trackers open; open_trackers receives it.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "tracking.json").write_text(json.dumps({"wandb_run_id": "olderid01"}))
    code = f"""
from pathlib import Path
from dist_train.config import load
from dist_train.tracking.sinks import open_trackers
config = load({str(RECIPES / 'mlp_regression.yaml')!r}, ["run_dir={run_dir}", "tracking.wandb.mode=offline"])
trackers, run_id = open_trackers(config, Path(config.run_dir), "fromckpt01")
trackers.log({{"loss": 1.5}}, 3)
trackers.close()
print("RUN_ID", run_id)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(**wandb_env(tmp_path)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "RUN_ID fromckpt01" in result.stdout
    (folder,) = offline_runs(run_dir)
    records = read_wandb_records(run_file(folder))
    assert run_ids(records) == ["fromckpt01"]
    assert [(h["_step"], h["loss"]) for h in wandb_history(records)] == [(3, 1.5)]
    assert json.loads((run_dir / "tracking.json").read_text()) == {"wandb_run_id": "fromckpt01"}


def test_online_without_api_key_falls_back_to_offline_with_a_warning(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", "train.max_steps=4",
                     "train.log_every=2", "scheduler.warmup_steps=0", "tracking.wandb.mode=online", timeout=600,
                     **wandb_env(tmp_path))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("dist-train: warning:")]
    assert len(warnings) == 1 and "no W&B API key" in warnings[0] and "wandb sync" in warnings[0], result.stderr
    (folder,) = offline_runs(run_dir)
    assert [h["_step"] for h in wandb_history(read_wandb_records(run_file(folder)))] == [2, 4]


def test_missing_wandb_package_is_a_usage_error_and_leaves_run_dir_alone(tmp_path):
    # Simulated absence: sys.modules["wandb"] = None makes `import wandb` raise ImportError, exactly as Python does
    # for a package that is not installed (the real package stays installed for the other tests).
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
    code = ("import sys; sys.modules['wandb'] = None; from dist_train.cli import main; "
            f"main(['train', {str(RECIPES / 'mlp_regression.yaml')!r}, 'run_dir={run_dir}', 'train.max_steps=2', "
            "'tracking.wandb.mode=offline'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(**wandb_env(tmp_path)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tracking.wandb" in lines[0] and "pip install" in lines[0], result.stderr
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 5, "loss": 1.0}\n'
    assert not (run_dir / "wandb").exists()


def test_unwritable_run_dir_is_a_usage_error(tmp_path):
    # As root, permissions do not stop writes; a run_dir below a regular file cannot be created by anyone.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={blocker}/run", "train.max_steps=2",
                     "tracking.wandb.mode=offline", "tracking.tensorboard=true", check=False, timeout=300,
                     **wandb_env(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run_dir" in lines[0] and str(blocker) in lines[0], result.stderr
    assert blocker.read_text() == "not a folder"
