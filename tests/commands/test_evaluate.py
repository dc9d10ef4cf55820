"""`dist-train evaluate CHECKPOINT`: the eval figures of a checkpoint on any world size equal what the run logged
at that step (the EMA weights when the run had them); mistakes are one line, exit 2."""

from __future__ import annotations

import json

import pytest

from support import RECIPES, read_metrics, run_cli, run_torchrun

ARGS = ["train.max_steps=8", "train.batch_size=8", "train.log_every=4", "train.eval_every=8", "dataset.n_train=200",
        "dataset.n_eval=50", "dataset.in_features=8", "model.hidden=16"]


def logged_eval(run_dir, step):
    return next(r for r in read_metrics(run_dir) if r["step"] == step and "eval/mse" in r)["eval/mse"]


def evaluated(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluate") / "ddp"
    run_torchrun(2, "train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", *ARGS)
    return run_dir


def test_a_2_process_checkpoint_evaluates_the_same_on_1_and_2_processes(ddp_run):
    step_dir, logged = ddp_run / "checkpoints" / "step_8", logged_eval(ddp_run, 8)
    one = evaluated(run_cli("evaluate", step_dir, "--json"))
    two = evaluated(run_torchrun(2, "evaluate", step_dir, "--json"))
    assert one["world_size"] == 1 and two["world_size"] == 2 and one["weights"] == "model"
    for values in (one, two):
        assert values["mse"] == pytest.approx(logged, rel=1e-6)
    train_split = evaluated(run_cli("evaluate", step_dir, "--split", "train", "--json"))
    assert train_split["split"] == "train" and train_split["mse"] != pytest.approx(logged, rel=1e-3)
    line = run_cli("evaluate", step_dir).stdout.strip().splitlines()[-1]
    assert line.startswith(f"evaluate {step_dir} (step 8, eval split, 50 samples, model weights, world size 1): loss ")


def test_ema_weights_are_what_auto_evaluates(tmp_path):
    run_dir = tmp_path / "ema"
    run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", *ARGS, "train.ema=0.7")
    step_dir, logged = run_dir / "checkpoints" / "step_8", logged_eval(run_dir, 8)
    auto = evaluated(run_cli("evaluate", step_dir, "--json"))
    assert auto["weights"] == "ema" and auto["mse"] == pytest.approx(logged, rel=1e-6)
    model = evaluated(run_cli("evaluate", step_dir, "--weights", "model", "--json"))
    assert model["mse"] != pytest.approx(logged, rel=1e-4)


def test_mistakes_are_one_line(tmp_path, ddp_run):
    for args, expected in [
        ((tmp_path / "nope",), "is not a folder"),
        ((ddp_run / "checkpoints" / "step_8", "--weights", "ema"), "has no EMA weights (train.ema was off)"),
        ((ddp_run / "checkpoints" / "step_8", "train.eval_batch_size=0"), "train.eval_batch_size: must be > 0"),
    ]:
        result = run_cli("evaluate", *args, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert expected in result.stderr
