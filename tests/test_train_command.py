"""What a user meets on the command line of `dist-train train`: a finished run left alone, --print-config,
--version, warnings, config errors that do not wait for torch, timestamps and the final line."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from support import REPO, RECIPES, env, read_metrics, run_cli

TINY = ["dataset.n_train=256", "dataset.n_eval=64", "model.hidden=8", "train.batch_size=32",
        "scheduler.warmup_steps=0", "train.log_every=2", "train.eval_every=4", "train.max_steps=4"]


def test_rerunning_a_finished_run_trains_nothing_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", *TINY)
    assert re.search(r"^done: 4 steps in \d+s, loss \d", first.stdout, re.M), first.stdout
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", r["time"])
               for r in read_metrics(run_dir))
    kept = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    again = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", *TINY[:-1], "train.max_steps=2",
                    "optimizer.lr=0.5")
    assert f"run {run_dir} is complete: it reached step 4 of train.max_steps=2; nothing to train" in again.stdout
    assert "done:" not in again.stdout and "nan" not in again.stdout
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == kept
    summary = run_cli("summary", run_dir).stdout
    assert re.search(r"^steps\s+4 / 4$", summary, re.M) and re.search(r"^status\s+complete$", summary, re.M)


def test_print_config_prints_the_resolved_config_and_exits(tmp_path):
    run_dir = tmp_path / "never"
    out = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", "optimizer.lr=0.02",
                  "--print-config").stdout
    printed = yaml.safe_load(out)
    assert printed["optimizer"]["lr"] == 0.02 and printed["recipe"] == "mlp_regression"
    assert printed["model"] == {"hidden": 128} and printed["callbacks"] == []
    assert not run_dir.exists()


def test_version():
    from dist_train import __version__

    assert run_cli("--version").stdout.strip() == f"dist-train {__version__}"


def test_warmup_longer_than_the_run_is_warned_about(tmp_path):
    result = run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={tmp_path}", *TINY,
                     "scheduler.warmup_steps=10")
    assert "dist-train: warning: scheduler.warmup_steps=10 >= train.max_steps=4" in result.stderr


def test_a_core_config_mistake_is_reported_before_torch_is_imported():
    code = ("import sys\nfrom dist_train.config import load\nfrom dist_train.errors import UsageError\n"
            "try:\n    load('recipes/mlp_regression.yaml', ['train.batch_size=-1'])\n"
            "except UsageError as e:\n    print(e)\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, check=True)
    message, torch_imported = out.stdout.strip().splitlines()
    assert message == "train.batch_size: must be > 0, got -1" and torch_imported == "False"
