"""Models with buffers (BatchNorm) under sharding, from the equivalence fixture's BatchNorm runs (2 processes):
bf16 trains under fsdp and every ZeRO stage; the running statistics are the same on every rank and equal ddp's;
the logged eval equals the eval of the model exported from the run's last checkpoint, under every strategy, and
with an EMA (of the statistics too) that eval and the export both use."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dist_train.config import load
from dist_train.recipe import resolve_recipe
from dist_train.strategies import strategy_class
from strategy_matrix import BATCHNORM, BATCHNORM_COMMON, BATCHNORM_RECIPE, COMMON
from support import RECIPES, assert_close_losses, read_metrics, train_losses

FP32 = ["ddp", "fsdp", "zero1", "zero3", "fsdp_ema", "zero1_ema"]


def buffers(run_dir, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / f"buffers_rank{rank}.pt", weights_only=True)


@pytest.mark.parametrize("name", [n for n in BATCHNORM if n.endswith("_bf16")])
def test_bf16_batchnorm_trains_under_fsdp_and_every_zero_stage(equivalence_runs, name):
    """These crashed with `expected scalar type BFloat16 but found Float` in batch_norm (bf16 weights, fp32
    running statistics). Now BatchNorm computes in fp32 under each: the losses stay near the fp32 run's."""
    losses = train_losses(equivalence_runs / "batchnorm" / name)
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses.values()), losses
    assert_close_losses(losses, train_losses(equivalence_runs / "batchnorm" / "ddp"), rel=2e-2)


@pytest.mark.parametrize("name", list(BATCHNORM))
def test_running_statistics_are_the_same_on_every_rank(equivalence_runs, name):
    run_dir = equivalence_runs / "batchnorm" / name
    rank0, rank1 = buffers(run_dir, 0), buffers(run_dir, 1)
    assert set(rank0) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert int(rank0["1.num_batches_tracked"]) == 6
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


@pytest.mark.parametrize("name", ["fsdp", "zero1", "zero3"])
def test_running_statistics_are_ddps(equivalence_runs, name):
    """ddp broadcasts rank 0's buffers; the sharded strategies end with the same statistics."""
    reference = buffers(equivalence_runs / "batchnorm" / "ddp", 0)
    for key, value in buffers(equivalence_runs / "batchnorm" / name, 0).items():
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FP32)
def test_logged_eval_equals_the_exported_models_eval(equivalence_runs, name):
    run_dir = equivalence_runs / "batchnorm" / name
    config = load(RECIPES / "mlp_regression.yaml", [*COMMON, *BATCHNORM_COMMON, BATCHNORM_RECIPE, *BATCHNORM[name]])
    recipe = resolve_recipe(config.recipe)(config)
    model = recipe.build_model()
    strategy = "deepspeed" if name.startswith("zero") else "fsdp" if name.startswith("fsdp") else "ddp"
    weights = "ema" if name.endswith("_ema") else "model"  # what the logged eval ran on
    strategy_class(strategy).load_consolidated(run_dir / "checkpoints" / "step_6", model, weights)
    _, eval_data = recipe.build_datasets()
    x, y = eval_data.tensors
    with torch.no_grad():
        exported = F.mse_loss(model.eval()(x), y).item()
    logged = [r["eval/loss"] for r in read_metrics(run_dir) if "eval/loss" in r]
    assert logged and logged[-1] == pytest.approx(exported, rel=1e-6)
