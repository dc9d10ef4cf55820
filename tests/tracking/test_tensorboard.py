"""TensorBoard: the event file a real run writes is read back by tensorboard's own EventAccumulator."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import REPO, RECIPES, env, read_metrics


def test_event_file_holds_the_logged_metrics(tracked_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tracked_runs[0]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "lr", "samples_per_s", "eval/loss", "eval/mse"} <= set(tags)
    logged = {r["step"]: r for r in read_metrics(run_dir) if "loss" in r}
    scalars = {e.step: e.value for e in events.Scalars("loss")}
    assert sorted(scalars) == sorted(logged) == [5, 10, 15, 20]
    for step, value in scalars.items():
        assert value == pytest.approx(logged[step]["loss"], rel=1e-6)  # stored as float32
    assert [e.step for e in events.Scalars("eval/mse")] == [10, 20]


def test_missing_tensorboard_package_is_a_usage_error(tmp_path):
    # Simulated absence: sys.modules["tensorboard"] = None makes `import tensorboard` raise ImportError, exactly
    # as Python does for a package that is not installed (the real package stays installed for the other tests).
    run_dir = tmp_path / "run"
    code = ("import sys; sys.modules['tensorboard'] = None; from dist_train.cli import main; "
            f"main(['train', {str(RECIPES / 'mlp_regression.yaml')!r}, 'run_dir={run_dir}', 'train.max_steps=2', "
            "'tracking.tensorboard=true'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tracking.tensorboard" in lines[0] and "pip install" in lines[0], lines
    assert not (run_dir / "metrics.jsonl").exists()
