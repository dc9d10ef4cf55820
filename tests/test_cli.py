"""The CLI's contract for user mistakes: one line on stderr naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

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
            "build_parser()[0].format_help(); "
            "heavy = [m for m in ('torch', 'deepspeed', 'wandb', 'torchvision', 'matplotlib') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dist_train", "--help"], cwd=REPO, env=env(), check=True, capture_output=True)
    assert time.perf_counter() - start < 5  # generous bound for a loaded CI box; the README figure is measured


def bomb_config(path) -> str:
    """480 bytes of YAML whose aliases stand for 10^8 items (the 'billion laughs' shape)."""
    lines = ["recipe: mlp_regression", 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]" for p, n in zip("abcdefg", "bcdefgh")]
    path.write_text("\n".join(lines) + "\ndeepspeed: {config: {x: *h}}\n")
    return str(path)


# What the config fuzzer (tests/config/test_fuzz.py) checks in-process, through the real command: exit 2, at most
# 3 lines naming the key (or file), the value shortened, no traceback, nothing written.
@pytest.mark.parametrize("case", ["seed_2_70", "deep_override", "alias_bomb", "hidden_1e14"])
def test_bad_config_gives_exit_2_and_a_short_error(tmp_path, case):
    run_dir = tmp_path / "run"
    config, extra, needle = RECIPES / "mlp_regression.yaml", [], ""
    if case == "seed_2_70":
        extra, needle = [f"seed={2**70}"], "seed: 1180591620717411303424 is out of range"
    elif case == "deep_override":
        extra, needle = ["dataset.noise=" + "[" * 800 + "]" * 800], "nested more than 32 levels deep"
    elif case == "alias_bomb":
        config, needle = bomb_config(tmp_path / "bomb.yaml"), "items once its aliases are expanded"
    else:  # the recipe's build fails: one line naming the recipe and its sections
        extra, needle = ["model.hidden=1.0e+14"], "recipe mlp_regression: build_model() failed: RuntimeError"
    result = run_cli("train", config, f"run_dir={run_dir}", *extra, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3 and len(result.stderr) < 1000, result.stderr[:3000]
    assert lines[0].startswith("dist-train: error: ") and needle in lines[0]
    assert not run_dir.exists()  # nothing written, not even the run_dir


def test_overrides_anywhere_on_the_line():
    """`key=value` words after options are overrides (in line order) for every subcommand that takes a config."""
    from dist_train.cli import parse

    a = parse(["launch", "c.yaml", "a=1", "--nproc-per-node", "2", "train.max_steps=50", "--dry-run", "b=2"])
    assert (a.overrides, a.nproc_per_node, a.dry_run) == (["a=1", "train.max_steps=50", "b=2"], 2, True)
    a = parse(["sbatch", "c.yaml", "--nodes", "2", "train.max_steps=50", "--time", "00:10:00"])
    assert (a.overrides, a.nodes, a.time) == (["train.max_steps=50"], 2, "00:10:00")
    a = parse(["sweep", "c.yaml", "--grid", "optimizer.lr=1e-3,3e-3", "train.max_steps=5", "--trials", "2"])
    assert (a.overrides, a.grid, a.trials) == (["train.max_steps=5"], ["optimizer.lr=1e-3,3e-3"], 2)
    assert parse(["train", "c.yaml", "a=1"]).overrides == ["a=1"]


def test_unknown_option_shows_the_subcommands_usage():
    r = run_cli("launch", CONFIG, "--nprocs", "2", "train.max_steps=5", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("usage: dist-train launch") and "unrecognized arguments: --nprocs 2" in r.stderr
