"""train.sync_batchnorm on 2 processes (ddp and fsdp, gloo on CPU where torch's SyncBatchNorm refuses to run):
BatchNorm normalises with the statistics of the global batch, so 2 ranks x 16 samples train exactly as one
process with 32 (losses and running statistics), which plain BatchNorm on 2 ranks does not."""

from __future__ import annotations

import pytest
import torch

from dist_train.config import load
from dist_train.recipe import resolve_recipe
from dist_train.strategies.base import TorchStrategy
from strategy_matrix import BATCHNORM_COMMON, BATCHNORM_RECIPE, COMMON
from support import RECIPES, assert_close_losses, train_losses


@pytest.fixture(scope="module")
def one_process_batch_32(tmp_path_factory):
    """The reference: the runner's Trainer in this process (one process, no process group), batch 32."""
    from dist_train.cluster import DistEnv
    from dist_train.runner import Trainer

    run_dir = tmp_path_factory.mktemp("batchnorm_single")
    overrides = [o for o in COMMON if not o.startswith("train.batch_size")]
    config = load(RECIPES / "mlp_regression.yaml", [*overrides, *BATCHNORM_COMMON, BATCHNORM_RECIPE,
                                                    "train.batch_size=32", "strategy=single", f"run_dir={run_dir}"])
    trainer = Trainer(config, DistEnv.single(), torch.device("cpu"))
    try:
        trainer.fit()
    finally:
        trainer.release()
    return run_dir


def final_statistics(run_dir) -> dict[str, torch.Tensor]:
    """The running statistics of the run's last checkpoint."""
    config = load(RECIPES / "mlp_regression.yaml", [*COMMON, *BATCHNORM_COMMON, BATCHNORM_RECIPE])
    model = resolve_recipe(config.recipe)(config).build_model()
    TorchStrategy.load_consolidated(run_dir / "checkpoints" / "step_6", model)
    return {k: v for k, v in model.state_dict().items() if k.startswith("1.running")}


@pytest.mark.parametrize("name", ["ddp_sync", "fsdp_sync"])
def test_two_ranks_train_as_one_process_with_the_global_batch(equivalence_runs, one_process_batch_32, name):
    single_dir = one_process_batch_32
    reference = train_losses(single_dir)
    assert_close_losses(train_losses(equivalence_runs / "batchnorm" / name), reference, rel=1e-5)
    expected = final_statistics(single_dir)
    for key, value in final_statistics(equivalence_runs / "batchnorm" / name).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)


def test_without_it_the_ranks_statistics_differ_from_the_global_batch(equivalence_runs, one_process_batch_32):
    single_dir = one_process_batch_32
    plain = train_losses(equivalence_runs / "batchnorm" / "ddp")
    diffs = [abs(a - b) / b for a, b in zip(plain.values(), train_losses(single_dir).values())]
    assert max(diffs) > 1e-3, diffs
