"""End-to-end single-process runs through the real CLI on generated Fashion-MNIST idx files."""

from __future__ import annotations

import yaml

from support import RECIPES, read_metrics, run_cli

CONFIG = RECIPES / "fashion_mnist_mlp.yaml"


def test_single_process_trains_and_logs(tmp_path, fashion_root):
    run_dir = tmp_path / "run"
    result = run_cli("train", CONFIG, f"data.root={fashion_root}", f"run_dir={run_dir}", "train.max_steps=40",
                     "train.log_every=10", "train.eval_every=20", "train.batch_size=32", "scheduler.warmup_steps=0")
    records = read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/accuracy" in r]
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    for r in train:
        assert {"loss", "lr", "samples_per_s", "step_time_s", "epoch"} <= r.keys() and r["samples_per_s"] > 0
    assert [r["step"] for r in evals] == [20, 40]
    assert train[-1]["loss"] < train[0]["loss"]
    assert evals[-1]["eval/accuracy"] > 0.5  # 10 well-separated classes: far above chance (0.1) after 40 steps
    assert "global batch 32 x 1 x 1 = 32" in result.stdout and "strategy single" in result.stdout
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["train"]["max_steps"] == 40 and resolved["data"]["root"] == str(fashion_root)
    assert resolved["model"] == {"hidden": [128, 64], "dropout": 0.0}


def test_precisions_and_optimizers_run(tmp_path):
    for i, extra in enumerate([["train.precision=bf16", "optimizer.name=sgd", "optimizer.momentum=0.9"],
                               ["optimizer.name=rmsprop", "train.clip_grad_norm=0.5", "train.grad_accum=2"],
                               ["optimizer.name=adam", "scheduler.name=linear", "scheduler.warmup_steps=3"]]):
        run_dir = tmp_path / f"r{i}"
        run_cli("train", RECIPES / "mlp_regression.yaml", f"run_dir={run_dir}", "train.max_steps=12",
                "train.log_every=4", "dataset.n_train=512", "dataset.n_eval=64", *extra)
        losses = [r["loss"] for r in read_metrics(run_dir) if "loss" in r]
        assert len(losses) == 3 and all(v == v for v in losses)  # ran, logged, no NaN
        if "train.clip_grad_norm=0.5" in extra:
            assert all("grad_norm" in r for r in read_metrics(run_dir) if "loss" in r)


def test_user_recipe_in_own_file(tmp_path):
    (tmp_path / "tiny.py").write_text(
        "import torch\nfrom torch import nn\n"
        "from dist_train.data import InMemoryDataset\nfrom dist_train.recipe import Recipe\n"
        "class Tiny(Recipe):\n"
        "    def build_model(self):\n        return nn.Linear(3, 1)\n"
        "    def build_datasets(self):\n"
        "        x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))\n"
        "        return InMemoryDataset(x, x.sum(1, keepdim=True)), None\n"
        "    def loss(self, out, batch):\n        return ((out - batch[1]) ** 2).mean()\n"
    )
    (tmp_path / "tiny.yaml").write_text(f"recipe: tiny.py:Tiny\nrun_dir: {tmp_path / 'run'}\n"
                                        "train: {max_steps: 30, batch_size: 16, log_every: 10}\n"
                                        "optimizer: {lr: 0.05}\n")
    run_cli("train", tmp_path / "tiny.yaml")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert losses[-1] < losses[0] / 2
