"""A checkpoint never runs code: payloads planted in `.metadata`, `trainer_state.pt`, `rng_rank0.pt` and DeepSpeed's
files, with the manifest re-hashed as whoever ships a checkpoint can do, are refused with one line naming the file
on every reader (resume auto, an explicit resume path, export); under `auto` the run falls back to the previous
intact checkpoint and finishes. Each payload would create a marker file; none may exist afterwards."""

from __future__ import annotations

import pickle
import re

import pytest
import torch

from checkpoint_support import ThenReal, copy_run, losses, plant_metadata_payload, plant_torch_payload, train
from support import RECIPES, run_cli
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


def test_deepspeed_checkpoint_payload_is_refused_before_deepspeed_reads_it(tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install 'dist-train[deepspeed]'")
    run = tmp_path / "ds"
    run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run}", "strategy=deepspeed",
                 "deepspeed.zero_stage=1", "train.max_steps=2", "train.batch_size=8", "dataset.n_train=64",
                 "dataset.in_features=8", "model.hidden=16", "train.eval_every=1000")
    step = run / "checkpoints" / "step_2"
    name = "deepspeed/mp_rank_00_model_states.pt"
    marker = tmp_path / "payload-ran"
    plant_torch_payload(step, name, f"touch {marker}")
    result = run_cli("export", step, "--format", "state_dict", "--out", tmp_path / "m.pt", check=False)
    assert not marker.exists()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        re.escape(f"dist-train: error: export: '{step}' is not a usable checkpoint: file {name} is refused by "
                  "torch.load(weights_only=True): it names ") + r"[\w.]+ \(a checkpoint holds data, never code\)",
        lines[0]), lines
