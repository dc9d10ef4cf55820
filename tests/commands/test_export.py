"""`dist-train export`: a 2-process DDP checkpoint (DCP shards) becomes one TorchScript / ONNX / state_dict file
whose outputs equal those of the trained model, read independently with DCP's own converter."""

from __future__ import annotations

import pytest
import torch

from support import RECIPES, read_metrics, run_cli, run_torchrun


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    run_torchrun(2, "train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", "train.max_steps=12",
                 "train.batch_size=8", "train.log_every=6", "train.eval_every=1000", "dataset.n_train=200",
                 "dataset.in_features=8", "model.hidden=16")
    step_dir = run_dir / "checkpoints" / "step_12"
    # The trained model, rebuilt by hand from the checkpoint with DCP's converter (not dist_train's loader).
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(step_dir, run_dir / "full.pt")
    state = torch.load(run_dir / "full.pt", weights_only=True)["model"]
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    model.load_state_dict(state)
    return step_dir, model.eval()


def test_export_torchscript_gives_the_trained_model_outputs(trained, tmp_path):
    step_dir, model = trained
    out = tmp_path / "model.pt"
    result = run_cli("export", step_dir, "--format", "torchscript", "--out", out)
    assert str(out) in result.stdout
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(out))(x), model(x))


def test_export_onnx_gives_the_trained_model_outputs(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported file; pip install onnxruntime")
    step_dir, model = trained
    out = tmp_path / "model.onnx"
    run_cli("export", step_dir, "--format", "onnx", "--out", out, timeout=600)
    session = ort.InferenceSession(str(out))
    x = torch.randn(7, 8)  # another batch size than the export example: the batch dimension is dynamic
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-5, atol=1e-6)


def test_export_state_dict_default_path(trained):
    step_dir, model = trained
    run_cli("export", step_dir, "--format", "state_dict")
    state = torch.load(step_dir.parent.parent / "export" / "step_12.state_dict.pt", weights_only=True)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_export_refuses_a_folder_that_is_not_a_checkpoint(tmp_path):
    result = run_cli("export", tmp_path, "--format", "onnx", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dist-train: error: export: '{tmp_path}' is not a usable checkpoint: no checkpoint.json "
        "(an unfinished save, a deleted manifest, or not a checkpoint folder)"
    ]


def test_export_from_a_deepspeed_zero3_checkpoint_reproduces_the_logged_eval(tmp_path):
    """ZeRO-3 shards parameters across ranks; export reassembles them (DeepSpeed's zero_to_fp32). The exported
    model's MSE on the recipe's eval set must equal the eval MSE the 2-process run itself logged at its last step."""
    run_dir = tmp_path / "ds"
    sizes = ["dataset.n_train=256", "dataset.n_eval=64", "dataset.in_features=8", "model.hidden=16"]
    run_torchrun(2, "train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", "strategy=deepspeed",
                 "deepspeed.zero_stage=3", "train.max_steps=6", "train.batch_size=8", "train.log_every=3", *sizes)
    out = tmp_path / "model.pt"
    run_cli("export", run_dir / "checkpoints" / "step_6", "--format", "torchscript", "--out", out)
    logged = [r for r in read_metrics(run_dir) if "eval/mse" in r][-1]["eval/mse"]

    from dist_train.config import load
    from dist_train.recipes.mlp_regression import generate

    dataset = load(RECIPES / "mlp_regression.yaml", sizes).section("dataset")
    x, y = generate(dataset, dataset.n_eval, 1)
    with torch.no_grad():
        mse = torch.mean((torch.jit.load(str(out))(x).double() - y.double()) ** 2).item()
    assert abs(mse - logged) <= 1e-5 * logged
