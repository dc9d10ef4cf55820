"""The EMA of the weights (dist_train/callbacks/ema.py) under sharding, through each strategy's ema_tensors and
register_state (2 processes, from the equivalence fixture; HSDP and tensor parallel in test_parallelize.py): each rank averages its own shards (FSDP2 DTensor shards, ZeRO-3
partitions), and the result is ddp's: the evaluations that use it, the full EMA weights saved at the end, and the
EMA weights exported from the checkpoint (DCP reshards them; ZeRO-3's per-rank partitions are reassembled)."""

from __future__ import annotations

import pytest
import torch

from dist_train.config import load
from dist_train.recipe import resolve_recipe
from dist_train.strategies import strategy_class
from strategy_matrix import COMMON, EMA, EMA_COMMON
from support import RECIPES, read_metrics

SHARDED = [name for name in EMA if name != "ddp"]


def evals(run_dir) -> dict[int, float]:
    return {r["step"]: r["eval/loss"] for r in read_metrics(run_dir) if "eval/loss" in r}


def saved_ema(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "ema_model.pt", weights_only=True)


@pytest.mark.parametrize("name", SHARDED)
def test_evaluations_on_the_ema_equal_ddps(equivalence_runs, name):
    reference = evals(equivalence_runs / "ema" / "ddp")
    assert sorted(reference) == [5, 10]
    got = evals(equivalence_runs / "ema" / name)
    assert got.keys() == reference.keys()
    for step in reference:
        assert got[step] == pytest.approx(reference[step], rel=1e-5)


@pytest.mark.parametrize("name", SHARDED)
def test_the_full_ema_weights_equal_ddps(equivalence_runs, name):
    reference = saved_ema(equivalence_runs / "ema" / "ddp")
    got = saved_ema(equivalence_runs / "ema" / name)
    assert got.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(got[key].float(), reference[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_ema_is_not_the_trained_weights(equivalence_runs):
    """With decay 0.5 the EMA lags the weights: the comparisons above are of the EMA, not of the model."""
    config = load(RECIPES / "mlp_regression.yaml", [*COMMON, *EMA_COMMON, *EMA["ddp"]])
    model = resolve_recipe(config.recipe)(config).build_model()
    strategy_class("ddp").load_consolidated(equivalence_runs / "ema" / "ddp" / "checkpoints" / "step_10", model)
    ema = saved_ema(equivalence_runs / "ema" / "ddp")
    assert max(float((p - ema[n]).abs().max()) for n, p in model.state_dict().items()) > 1e-3


@pytest.mark.parametrize("name", list(EMA))
def test_exported_ema_weights_are_the_runs(equivalence_runs, name):
    """load_consolidated(weights="ema") on the last checkpoint, in one process: DCP reassembles the fsdp shards,
    the ZeRO-3 partitions of both ranks are concatenated; the same weights as the run saved at its end."""
    run_dir = equivalence_runs / "ema" / name
    config = load(RECIPES / "mlp_regression.yaml", [*COMMON, *EMA_COMMON, *EMA[name]])
    model = resolve_recipe(config.recipe)(config).build_model()
    strategy = "deepspeed" if name.startswith("zero") else name
    directory = run_dir / "checkpoints" / "step_10"
    assert strategy_class(strategy).has_ema(directory)
    strategy_class(strategy).load_consolidated(directory, model, weights="ema")
    for key, value in saved_ema(run_dir).items():
        torch.testing.assert_close(model.state_dict()[key], value.float(), rtol=1e-6, atol=1e-7, msg=key)
