"""The CLI's contract for user mistakes: one line on stderr naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
import time

from support import REPO, RECIPES, env, run_cli

CONFIG = RECIPES / "fashion_mnist_mlp.yaml"


def usage_error(*args) -> str:
    result = run_cli(*args, check=False)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("dist-train: error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_config_errors_exit_2(tmp_path):
    assert "train.max_step: unknown key (did you mean 'max_steps'?)" in usage_error("train", CONFIG, "train.max_step=5")
    assert "not found" in usage_error("train", tmp_path / "missing.yaml")


def test_missing_data_names_fetch_command(tmp_path):
    line = usage_error("train", CONFIG, f"data.root={tmp_path}", f"run_dir={tmp_path / 'run'}")
    assert "data.root" in line and "train-images-idx3-ubyte" in line
    assert f"dist-train data fetch fashion-mnist --root {tmp_path}" in line


def test_corrupt_idx_file(tmp_path, fashion_root):
    import shutil

    root = tmp_path / "corrupt"
    shutil.copytree(fashion_root, root)
    images = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # truncated
    line = usage_error("train", CONFIG, f"data.root={root}", f"run_dir={tmp_path / 'run'}")
    assert "corrupt" in line and "data fetch fashion-mnist" in line


def test_fp16_on_cpu(tmp_path):
    line = usage_error("train", RECIPES / "mlp_regression.yaml", "train.precision=fp16", f"run_dir={tmp_path}")
    assert "train.precision: fp16 needs a CUDA device" in line and "bf16" in line


def test_global_batch_larger_than_dataset(tmp_path):
    line = usage_error("train", RECIPES / "mlp_regression.yaml", "dataset.n_train=100", "train.batch_size=64",
                       "train.grad_accum=2", f"run_dir={tmp_path}")
    assert "global batch 64 x grad_accum 2 x data-parallel ranks 1 = 128 exceeds the 100 training samples" in line


def test_world_size_larger_than_dataset_under_torchrun(tmp_path):
    from support import run_torchrun

    result = run_torchrun(2, "train", RECIPES / "mlp_regression.yaml", "dataset.n_train=1", "train.batch_size=1",
                          f"run_dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "data-parallel ranks 2 = 2 exceeds the 1 training samples" in result.stderr


def test_data_fetch_unknown_name():
    assert "unknown dataset 'mnist'" in usage_error("data", "fetch", "mnist")


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t = time.perf_counter(); from dist_train.cli import build_parser; "
            "build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'deepspeed', 'wandb', 'torchvision', 'matplotlib') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dist_train", "--help"], cwd=REPO, env=env(), check=True, capture_output=True)
    assert time.perf_counter() - start < 5  # generous bound for a loaded CI box; the README figure is measured
