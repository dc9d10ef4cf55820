"""DeepSpeed: the generated config, an end-to-end bf16 run under the `deepspeed` launcher, checkpoint save/load
through the engine, and the bad inputs (unknown ZeRO stage, a contradicting pass-through key, deepspeed not
installed). Equivalence with ddp under torchrun: test_equivalence.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from dist_train.config import load
from dist_train.errors import UsageError
from dist_train.data import BatchLayout
from dist_train.strategies.deepspeed import check_passthrough, deepspeed_config
from support import RECIPES, REPO, free_port, run_cli, run_command
from test_fsdp import FASHION_SHORT, check_fashion_run

REGRESSION = [RECIPES / "mlp_regression.yaml", "strategy=deepspeed", "train.max_steps=3", "train.log_every=1",
              "dataset.n_train=512", "dataset.n_eval=64"]


def test_config_is_generated_from_ours_and_passes_extra_keys_through():
    config = load(RECIPES / "mlp_regression.yaml", [
        "strategy=deepspeed", "train.batch_size=8", "train.grad_accum=3", "train.precision=bf16",
        "train.clip_grad_norm=0.5", "deepspeed.zero_stage=2", "deepspeed.offload_optimizer=true",
        "deepspeed.config={zero_optimization: {overlap_comm: true}, wall_clock_breakdown: true}",
    ])
    ds = deepspeed_config(config, BatchLayout(batch_size=8, grad_accum=3, world_size=4, rank=0))
    batch = (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"])
    assert batch == (8, 3, 96)
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    assert ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"] == {"overlap_comm": True, "stage": 2, "offload_optimizer": {"device": "cpu"}}
    assert ds["wall_clock_breakdown"] is True
    assert "optimizer" not in ds and "scheduler" not in ds  # ours go in as client optimizer and schedule


@pytest.mark.parametrize("extra, key, ours", [
    ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps", "train.grad_accum"),
    ({"optimizer": {"type": "Adam"}}, "optimizer", "the optimizer section"),
    ({"zero_optimization": {"stage": 3}}, "zero_optimization.stage", "deepspeed.zero_stage"),
])
def test_a_key_we_generate_is_refused_in_passthrough(extra, key, ours):
    with pytest.raises(UsageError, match=rf"deepspeed\.config\.{key}: generated from {ours}; set it there"):
        check_passthrough(extra)


def test_passthrough_zero_section_must_be_a_mapping():
    with pytest.raises(UsageError, match=r"deepspeed\.config\.zero_optimization: expected a mapping"):
        check_passthrough({"zero_optimization": 2})


def assert_usage_error(result, *fragments) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_unknown_zero_stage(tmp_path):
    result = run_cli("train", *REGRESSION, "deepspeed.zero_stage=4", f"run_dir={tmp_path}", check=False)
    assert_usage_error(result, "deepspeed.zero_stage", "4", "valid: 0, 1, 2, 3")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_on_nan_skip_is_refused_before_training(tmp_path):
    result = run_cli("train", *REGRESSION, "train.on_nan=skip", f"run_dir={tmp_path}", check=False)
    assert_usage_error(result, "train.on_nan: skip is not supported with strategy deepspeed; use stop")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_contradicting_passthrough_key_exits_2(tmp_path):
    result = run_cli("train", *REGRESSION, "deepspeed.config.train_batch_size=1024", f"run_dir={tmp_path}",
                     check=False)
    assert_usage_error(result, "deepspeed.config.train_batch_size", "train.batch_size")


def test_deepspeed_not_installed_names_the_install_command(tmp_path):
    """deepspeed is installed in this venv (other tests need it) and uninstalling it would break parallel runs, so
    the child process gets a directory first on PYTHONPATH whose `deepspeed.py` raises ModuleNotFoundError for
    'deepspeed' exactly as the import system does when the package is absent: the strategy's real import code path
    meets a real import failure."""
    shadow = tmp_path / "no_deepspeed"
    shadow.mkdir()
    (shadow / "deepspeed.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'deepspeed'\", name='deepspeed')\n")
    result = run_cli("train", *REGRESSION, f"run_dir={tmp_path / 'run'}", check=False,
                     PYTHONPATH=os.pathsep.join([str(shadow), str(REPO)]))
    assert_usage_error(result, "deepspeed is not installed",
                       "DS_BUILD_OPS=0 pip install --no-build-isolation -c launch/constraints-cpu.txt "
                       "'dist-train[deepspeed]'")



def test_fashion_mnist_bf16_under_the_deepspeed_launcher(fashion_root, tmp_path):
    """End to end through the CLI under DeepSpeed's own launcher, which sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*
    and passes --local_rank to the module; bf16, ZeRO-2, 2 processes. (torchrun + deepspeed is what the
    equivalence runs use.)"""
    launcher = Path(sys.executable).parent / "deepspeed"
    if not launcher.exists():
        pytest.skip(f"no `deepspeed` launcher next to {sys.executable}")
    cmd = [launcher, "--num_gpus", "2", "--master_port", free_port(), "--module", "dist_train", "train",
           RECIPES / "fashion_mnist_mlp.yaml", "strategy=deepspeed", "deepspeed.zero_stage=2", "train.precision=bf16",
           f"data.root={fashion_root}", f"run_dir={tmp_path}", *FASHION_SHORT]
    result = run_command(cmd, DS_ACCELERATOR="cpu")
    assert "strategy deepspeed (ZeRO stage 2) | world size 2" in result.stdout
    check_fashion_run(tmp_path)


def test_checkpoint_roundtrip_restores_parameters(equivalence_runs):
    """ZeRO-3 (partitioned parameters): a model built from another seed differs, and after loading the checkpoint
    equals the saved one exactly."""
    result = json.loads((equivalence_runs / "plain" / "zero3" / "roundtrip.json").read_text())
    assert result["before"] > 1e-3
    assert result["after"] == 0.0
