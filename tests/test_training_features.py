"""Training features from YAML: L1 penalty, early stopping with two real ranks stopping together, and the
on_train_end hook (EMA and early stopping themselves: tests/callbacks/)."""

from __future__ import annotations

import json

import pytest
import torch

from dist_train.cluster import DistEnv
from dist_train.config import load
from dist_train.callbacks.early_stopping import EarlyStopping
from dist_train.config.schema import EarlyStoppingConfig
from dist_train.errors import UsageError
from dist_train.runner import Trainer
from support import RECIPES, read_metrics, run_cli, run_torchrun

TINY = ["dataset.n_train=256", "dataset.n_eval=64", "model.hidden=8", "train.batch_size=32", "scheduler.warmup_steps=0",
        "train.log_every=1"]


def trainer(tmp_path, *overrides) -> Trainer:
    config = load(RECIPES / "mlp_regression.yaml", [*TINY, f"run_dir={tmp_path / 'run'}", *overrides])
    return Trainer(config, DistEnv.single(), torch.device("cpu"))


def test_l1_penalty_is_l1_times_sum_of_absolute_weights_and_shrinks_them(tmp_path):
    t = trainer(tmp_path, "train.l1=0.01")
    params = list(t.strategy.unwrapped_model.parameters())
    assert t.l1_penalty().item() == pytest.approx(0.01 * sum(p.abs().sum().item() for p in params), rel=1e-6)

    def trained_l1(l1: str) -> float:
        tr = trainer(tmp_path / l1, f"train.l1={l1}", "train.max_steps=60", "optimizer.name=sgd", "optimizer.lr=0.05")
        tr.fit()
        return sum(p.abs().sum().item() for p in tr.strategy.unwrapped_model.parameters())

    assert trained_l1("0.05") < 0.8 * trained_l1("0.0")


COUNTING_RECIPE = '''
import os
from dist_train.recipes.mlp_regression import MLPRegression


class Counting(MLPRegression):
    """Writes one line per training forward, per rank; and the rank's last eval values at the end."""

    def forward(self, model, batch):
        if model.training:
            with open(os.path.join(os.environ["COUNT_DIR"], f"steps.rank{os.environ.get('RANK', '0')}"), "a") as f:
                f.write("step\\n")
        return super().forward(model, batch)

    def on_train_end(self, model, eval_values):
        import json
        with open(os.path.join(os.environ["COUNT_DIR"], f"end.rank{os.environ.get('RANK', '0')}"), "w") as f:
            json.dump({"training": model.training, "eval": eval_values}, f)
'''


def test_early_stopping_stops_both_ranks_after_the_same_step(tmp_path):
    recipe = tmp_path / "counting.py"
    recipe.write_text(COUNTING_RECIPE)
    run_dir = tmp_path / "run"
    result = run_torchrun(
        2, "train", RECIPES / "mlp_regression.yaml", f"recipe={recipe}:Counting", f"run_dir={run_dir}", *TINY,
        "train.max_steps=40", "train.eval_every=2", "train.early_stopping={metric: loss, mode: max, patience: 2}",
        COUNT_DIR=tmp_path, timeout=600,
    )
    # Replay the rule on the logged eval values (mode max on a falling loss: the first eval stays the best).
    evals = [(r["step"], r["eval/loss"]) for r in read_metrics(run_dir) if "eval/loss" in r]
    es = EarlyStopping(EarlyStoppingConfig(metric="loss", mode="max", patience=2))
    expected = next(step for step, v in evals if es.should_stop({"loss": v}))
    assert expected < 40 and evals[-1][0] == expected
    assert f"early stopping at step {expected}" in result.stdout
    counts = [len((tmp_path / f"steps.rank{r}").read_text().splitlines()) for r in (0, 1)]
    assert counts == [expected, expected]
    ends = [json.loads((tmp_path / f"end.rank{r}").read_text()) for r in (0, 1)]
    assert ends[0] == ends[1] and ends[0]["training"] is False  # the hook ran on every rank, in eval mode
    assert ends[0]["eval"]["loss"] == pytest.approx(evals[-1][1])


def test_on_train_end_single_process(tmp_path):
    recipe = tmp_path / "counting.py"
    recipe.write_text(COUNTING_RECIPE)
    run_cli("train", RECIPES / "mlp_regression.yaml", f"recipe={recipe}:Counting", f"run_dir={tmp_path / 'run'}",
            *TINY, "train.max_steps=3", "train.eval_every=3", COUNT_DIR=tmp_path)
    assert len((tmp_path / "steps.rank0").read_text().splitlines()) == 3
    assert "mse" in json.loads((tmp_path / "end.rank0").read_text())["eval"]
