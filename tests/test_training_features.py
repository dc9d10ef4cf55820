"""Training features from YAML: L1 penalty, EMA of weights, early stopping (unit, and two real ranks stopping
together), and the on_train_end hook."""

from __future__ import annotations

import json

import pytest
import torch

from dist_train.cluster import DistEnv
from dist_train.config import load
from dist_train.config.schema import EarlyStoppingConfig
from dist_train.early_stopping import EarlyStopping
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


def test_ema_follows_the_weights_step_by_step_and_is_what_eval_uses(tmp_path):
    decay = 0.5
    t = trainer(tmp_path, f"train.ema={decay}", "train.max_steps=3", "train.eval_every=3")
    snapshots = []
    step = t.strategy.step

    def recording_step():
        norm = step()
        snapshots.append([p.detach().clone() for p in t.strategy.unwrapped_model.parameters()])
        return norm

    t.strategy.step = recording_step
    result = t.fit()
    expected = snapshots[0]  # the first update copies the weights
    for snap in snapshots[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, snap)]
    got = list(t.ema.module.parameters())
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
    assert not all(torch.equal(g, w) for g, w in zip(got, snapshots[-1]))
    # eval ran on the EMA weights, and they were saved next to the run
    assert result.eval["loss"] == pytest.approx(t.evaluate()["loss"])
    saved = torch.load(tmp_path / "run" / "ema_model.pt")
    for (name, tensor), g in zip(saved.items(), got):
        torch.testing.assert_close(tensor, g, msg=name)


def test_ema_decay_must_be_between_0_and_1(tmp_path):
    with pytest.raises(UsageError, match=r"train.ema: must be < 1, got 1.5"):
        trainer(tmp_path, "train.ema=1.5")


@pytest.mark.parametrize("mode, values, stop_after", [
    ("min", [3.0, 2.0, 2.5, 2.1, 2.2], 5),    # best 2.0 at eval 2, three evals without improvement
    ("max", [0.5, 0.6, 0.6, 0.59, 0.7], None),  # improves again at the last eval
    ("min", [1.0, float("nan"), float("nan"), float("nan")], 4),  # NaN never improves
])
def test_early_stopping_decisions(mode, values, stop_after):
    es = EarlyStopping(EarlyStoppingConfig(metric="m", mode=mode, patience=3), ["loss", "m"])
    stops = [es.should_stop({"m": v}) for v in values]
    assert stops.index(True) + 1 == stop_after if stop_after else not any(stops)


def test_early_stopping_min_delta():
    es = EarlyStopping(EarlyStoppingConfig(metric="loss", patience=1, min_delta=0.1), ["loss"])
    assert not es.should_stop({"loss": 1.0})
    assert es.should_stop({"loss": 0.95})  # better, but not by more than min_delta


def test_early_stopping_unknown_metric_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"train.early_stopping.metric: unknown eval metric 'acc'.*loss, mse"):
        trainer(tmp_path, "train.early_stopping={metric: acc}")


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
    es = EarlyStopping(EarlyStoppingConfig(metric="loss", mode="max", patience=2), ["loss"])
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
