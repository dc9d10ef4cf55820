"""The EMA and early-stopping callbacks (switched on by train.ema / train.early_stopping), on a real Trainer."""

from __future__ import annotations

import pytest
import torch

from dist_train.callbacks.early_stopping import EarlyStopping
from dist_train.callbacks.ema import EMA
from dist_train.cluster import DistEnv
from dist_train.config import load
from dist_train.config.schema import EarlyStoppingConfig
from dist_train.errors import UsageError
from dist_train.runner import Trainer
from support import RECIPES

TINY = ["dataset.n_train=256", "dataset.n_eval=64", "model.hidden=8", "train.batch_size=32", "scheduler.warmup_steps=0",
        "train.log_every=1"]


def trainer(tmp_path, *overrides) -> Trainer:
    config = load(RECIPES / "mlp_regression.yaml", [*TINY, f"run_dir={tmp_path / 'run'}", *overrides])
    return Trainer(config, DistEnv.single(), torch.device("cpu"))


def find(t: Trainer, cls):
    return next(cb for cb in t.callbacks if isinstance(cb, cls))


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
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, snap, strict=False)]
    ema = find(t, EMA)
    got = [ema.shadow[name] for name, _ in t.strategy.unwrapped_model.named_parameters()]
    for e, g in zip(expected, got, strict=False):
        torch.testing.assert_close(g, e)
    assert not all(torch.equal(g, w) for g, w in zip(got, snapshots[-1], strict=False))
    # eval ran on the EMA weights (the model holds them after the run), and they were saved next to the run
    assert result.eval["loss"] == pytest.approx(t.evaluate(3)["loss"])
    for (name, p), g in zip(t.strategy.unwrapped_model.named_parameters(), got, strict=False):
        torch.testing.assert_close(p.detach(), g, msg=name)
    saved = torch.load(tmp_path / "run" / "ema_model.pt")
    for (name, tensor), g in zip(saved.items(), got, strict=False):
        torch.testing.assert_close(tensor, g, msg=name)


def test_eval_swaps_the_ema_in_and_training_goes_on_with_the_trained_weights(tmp_path):
    t = trainer(tmp_path, "train.ema=0.5", "train.max_steps=4", "train.eval_every=2")
    seen = []
    evaluate = t.evaluate

    def recording_evaluate(step):
        before = [p.detach().clone() for p in t.strategy.unwrapped_model.parameters()]
        values = evaluate(step)
        after = [p.detach().clone() for p in t.strategy.unwrapped_model.parameters()]
        seen.append(all(torch.equal(a, b) for a, b in zip(before, after, strict=False)))
        return values

    t.evaluate = recording_evaluate
    t.fit()
    assert seen == [True, True]  # eval (at steps 2 and 4) leaves the trained weights as they were


def test_ema_decay_must_be_between_0_and_1(tmp_path):
    with pytest.raises(UsageError, match=r"train.ema: must be < 1, got 1.5"):
        trainer(tmp_path, "train.ema=1.5")


@pytest.mark.parametrize("mode, values, stop_after", [
    ("min", [3.0, 2.0, 2.5, 2.1, 2.2], 5),    # best 2.0 at eval 2, three evals without improvement
    ("max", [0.5, 0.6, 0.6, 0.59, 0.7], None),  # improves again at the last eval
    ("min", [1.0, float("nan"), float("nan"), float("nan")], 4),  # NaN never improves
])
def test_early_stopping_decisions(mode, values, stop_after):
    es = EarlyStopping(EarlyStoppingConfig(metric="m", mode=mode, patience=3))
    stops = [es.should_stop({"m": v}) for v in values]
    assert stops.index(True) + 1 == stop_after if stop_after else not any(stops)


def test_early_stopping_min_delta():
    es = EarlyStopping(EarlyStoppingConfig(metric="loss", patience=1, min_delta=0.1))
    assert not es.should_stop({"loss": 1.0})
    assert es.should_stop({"loss": 0.95})  # better, but not by more than min_delta


def test_early_stopping_unknown_metric_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"train.early_stopping.metric: unknown eval metric 'acc'.*loss, mse"):
        trainer(tmp_path, "train.early_stopping={metric: acc}")
