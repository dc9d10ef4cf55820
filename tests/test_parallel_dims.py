"""The device mesh's shape from config, checked before any process group exists: the degrees against the world
size and the strategy, and the recipe's ability to split its model; each bad input is one line, exit 2."""

from __future__ import annotations

import pytest

from dist_train.config import load
from dist_train.errors import UsageError
from dist_train.parallel_dims import ParallelDims, check_parallel
from support import RECIPES, free_port, run_cli

GPT = [RECIPES / "gpt.yaml", "strategy=fsdp", "model.heads=4", "model.kv_heads=2", "model.dim=32",
       "model.seq_len=16"]


def gpt_config(*overrides):
    return load(GPT[0], [*GPT[1:], *overrides])


def test_shape_and_ranks():
    dims = ParallelDims.from_config(gpt_config("parallel.tensor=2", "fsdp.replicate=2"), world_size=8)
    assert (dims.replicate, dims.shard, dims.tensor, dims.dp, dims.world_size) == (2, 2, 2, 4, 8)
    # Tensor-innermost: ranks 0,1 form one tensor-parallel group and read data-parallel share 0.
    assert [dims.dp_rank(r) for r in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert dims.describe() == "tensor parallel 2 x HSDP 2 replicas x 2 shards"
    plain = ParallelDims.from_config(load(RECIPES / "mlp_regression.yaml"), world_size=4)
    assert (plain.replicate, plain.shard, plain.tensor) == (1, 4, 1)


@pytest.mark.parametrize("overrides, world, message", [
    (["parallel.tensor=3"], 4, "parallel.tensor: 3 does not divide the world size 4; use one of 1, 2, 4"),
    (["fsdp.replicate=3"], 4, "fsdp.replicate: 3 does not divide the 4 data-parallel ranks"),
    (["parallel.tensor=2", "fsdp.replicate=4"], 4, "fsdp.replicate: 4 does not divide the 2 data-parallel ranks "
                                                   "(world size 4 / parallel.tensor 2); use one of 1, 2"),
    (["parallel.tensor=2", "strategy=ddp"], 4, "parallel.tensor: 2 needs strategy=fsdp"),
    (["fsdp.replicate=2", "strategy=deepspeed"], 4, "fsdp.replicate: 2 needs strategy=fsdp"),
    (["parallel.tensor=4"], 4, "parallel.tensor: 4 does not divide model.kv_heads=2; use a degree that divides "
                               "it (e.g. 2)"),
    (["parallel.tensor=4", "model.kv_heads=4", "model.seq_len=18"], 4, "does not divide model.seq_len=18"),
])
def test_bad_mesh_is_refused_from_config(overrides, world, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_parallel(gpt_config(*overrides), world)


def test_tensor_parallel_needs_a_recipe_with_a_plan():
    config = load(RECIPES / "mlp_regression.yaml", ["strategy=fsdp", "parallel.tensor=2"])
    with pytest.raises(UsageError, match="recipe mlp_regression has none"):
        check_parallel(config, 2)


def test_one_line_exit_2_before_any_process_group(tmp_path):
    """Rank 0 of a 4-process job (the variables torchrun sets) stops before it would wait for the other ranks:
    no other process exists, so reaching the process group would hang, not fail. (The other bad shapes take the
    same path: check_parallel, tested above.)"""
    result = run_cli("train", *GPT, "parallel.tensor=4", f"run_dir={tmp_path}", check=False, RANK=0,
                     WORLD_SIZE=4, LOCAL_RANK=0, LOCAL_WORLD_SIZE=4, MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=free_port())
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "parallel.tensor: 4 does not divide model.kv_heads=2" in result.stderr
