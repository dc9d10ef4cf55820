"""A checkpoint never runs code: payloads planted in `.metadata`, `trainer_state.pt`, `rng_rank0.pt` and DeepSpeed's
files, with the manifest re-hashed as whoever ships a checkpoint can do, are refused with one line naming the file
on every reader (resume auto, an explicit resume path, export); under `auto` the run falls back to the previous
intact checkpoint and finishes. Each payload would create a marker file; none may exist afterwards."""

from __future__ import annotations

import json
import pickle
import re

import pytest
import torch

from checkpoint_support import (ThenReal, copy_run, losses, plant_metadata_payload, plant_torch_payload, rehash,
                                train)
from support import run_cli
from dist_train.checkpoint import safe_load
from dist_train.checkpoint.manifest import InvalidCheckpoint


@pytest.fixture
def tampered(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path / "run")
    marker = tmp_path / "payload-ran"
    return run, run / "checkpoints" / "step_10", marker


def test_metadata_payload_is_refused_and_auto_falls_back(tampered):
    run, step10, marker = tampered
    plant_metadata_payload(step10, f"touch {marker}")
    result = train(run, "train.max_steps=12")
    assert not marker.exists()
    assert re.search(rf"checkpoint: {step10} is damaged \(file \.metadata is refused: global '[\w.]+' is not part of "
                     r"DCP metadata \(a checkpoint holds data, never code\)\); falling back to the previous one",
                     result.stdout), result.stdout
    assert "(step 5)" in result.stdout and max(losses(run)) == 12


@pytest.mark.parametrize("reader", ["resume", "export"])
def test_metadata_payload_given_explicitly_is_one_line_exit_2(tampered, reader):
    run, step10, marker = tampered
    plant_metadata_payload(step10, f"touch {marker}")
    if reader == "resume":
        result = train(run, f"checkpoint.resume={step10}", "train.max_steps=12", check=False)
        where = f"checkpoint.resume: '{step10}'"
        hint = "; give auto, never or the path of a checkpoint folder (run_dir/checkpoints/step_<N>)"
    else:
        result = run_cli("export", step10, "--format", "state_dict", "--out", run / "m.pt", check=False)
        where, hint = f"export: '{step10}'", ""
    assert not marker.exists()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        re.escape(f"dist-train: error: {where} is not a usable checkpoint: file .metadata is refused: global ")
        + r"'[\w.]+'" + re.escape(f" is not part of DCP metadata (a checkpoint holds data, never code){hint}"),
        lines[0]), lines


def test_trainer_state_payload_auto_falls_back(tampered):
    run, step10, marker = tampered
    plant_torch_payload(step10, "trainer_state.pt", f"touch {marker}")
    result = train(run, "train.max_steps=12")
    assert not marker.exists()
    assert re.search(rf"checkpoint: {step10} is damaged \(file trainer_state.pt is refused by "
                     r"torch.load\(weights_only=True\): it names [\w.]+ \(a checkpoint holds data, never code\)\); "
                     "falling back", result.stdout), result.stdout
    assert "(step 5)" in result.stdout and max(losses(run)) == 12


def test_rng_payload_given_explicitly_is_one_line_exit_2(tampered):
    run, step10, marker = tampered
    plant_torch_payload(step10, "rng_rank0.pt", f"touch {marker}")
    result = train(run, f"checkpoint.resume={step10}", check=False)
    assert not marker.exists()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"dist-train: error: checkpoint.resume: '{step10}' is not a usable checkpoint: file rng_rank0.pt is refused "
        "by torch.load(weights_only=True): it names "), lines


def test_metadata_unpickler_admits_real_metadata_and_refuses_other_globals(saved_run, tmp_path):
    real = (saved_run / "checkpoints" / "step_10" / ".metadata").read_bytes()
    assert safe_load.read_metadata(real).state_dict_metadata.keys() == pickle.loads(real).state_dict_metadata.keys()
    for evil in (pickle.dumps(ThenReal("true", pickle.loads(real))), b"cbuiltins\neval\n(S'1'\ntR."):
        with pytest.raises(safe_load.UnsafeCheckpoint, match="is not part of DCP metadata"):
            safe_load.read_metadata(evil)
    # An entry that points outside the folder (DCP would read it as a shard) is damage, not a path to follow.
    metadata = pickle.loads(real)
    next(iter(metadata.storage_data.values())).relative_path = "../../etc/passwd"
    with pytest.raises(InvalidCheckpoint, match="points outside the checkpoint folder"):
        safe_load.read_metadata(pickle.dumps(metadata))


def test_deepspeed_loaders_are_forced_to_weights_only(tmp_path):
    """DeepSpeed's own loader passes weights_only=False; inside deepspeed_weights_only() that is overridden, and
    the DeepSpeed classes its optimizer files hold still load."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install 'dist-train[deepspeed]'")
    from deepspeed.runtime.zero.config import ZeroStageEnum

    marker = tmp_path / "payload-ran"
    torch.save(ThenReal(f"touch {marker}", {"w": torch.ones(2)}), tmp_path / "evil.pt")
    torch.save({"zero_stage": ZeroStageEnum.gradients, "w": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(safe_load.UnsafeCheckpoint, match="refused by torch.load"):
        with safe_load.deepspeed_weights_only():
            torch.load(tmp_path / "evil.pt", weights_only=False)  # what DeepSpeed's TorchCheckpointEngine calls
    assert not marker.exists()
    with safe_load.deepspeed_weights_only():
        assert torch.load(tmp_path / "plain.pt", weights_only=False)["zero_stage"] == ZeroStageEnum.gradients


def test_deepspeed_files_are_probed_with_its_classes_admitted_and_payloads_refused(tmp_path):
    """Verification reads every .pt of a DeepSpeed checkpoint with weights_only=True before DeepSpeed's own loader
    sees it: the plain DeepSpeed classes its optimizer files hold pass, a payload is refused naming the file."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install 'dist-train[deepspeed]'")
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    from dist_train.checkpoint.integrity import verify

    step = tmp_path / "step_4"
    (step / "deepspeed").mkdir(parents=True)
    torch.save({"zero_stage": ZeroStageEnum.optimizer_states, "loss_scaler": LossScaler(1.0),
                "w": torch.ones(3)}, step / "deepspeed" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    torch.save({"module": {"w": torch.ones(3)}}, step / "deepspeed" / "mp_rank_00_model_states.pt")
    manifest = {"step": 4, "recipe": "mlp_regression", "model": {"w": [3]}, "world_size": 1, "batch_size": 8,
                "grad_accum": 1, "global_batch": 8, "strategy": "deepspeed", "config": {}, "files": {},
                "format_version": 2}
    (step / "checkpoint.json").write_text(json.dumps(manifest))
    rehash(step, add=("deepspeed/zero_pp_rank_0_mp_rank_00_optim_states.pt", "deepspeed/mp_rank_00_model_states.pt"))
    assert verify(step).step == 4
    marker = tmp_path / "payload-ran"
    plant_torch_payload(step, "deepspeed/mp_rank_00_model_states.pt", f"touch {marker}")
    with pytest.raises(safe_load.UnsafeCheckpoint) as e:
        verify(step)
    assert not marker.exists()
    assert str(e.value).startswith("file deepspeed/mp_rank_00_model_states.pt is refused by "
                                   "torch.load(weights_only=True): it names ")
