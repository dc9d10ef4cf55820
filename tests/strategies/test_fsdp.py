"""FSDP2 end to end through the CLI: bf16 training on Fashion-MNIST under torchrun, and the one-process rule."""

from __future__ import annotations

from support import RECIPES, assert_close_losses, read_metrics, run_cli, run_torchrun, train_losses

FASHION_SHORT = ["train.max_steps=24", "train.batch_size=32", "train.log_every=4", "train.eval_every=1000",
                 "scheduler.warmup_steps=0", "model.hidden=[64]"]


def check_fashion_run(run_dir) -> None:
    """Trained: the loss fell and the generated classes are told apart far above chance (0.1)."""
    losses = train_losses(run_dir)
    assert len(losses) == 6 and losses[24] < 0.7 * losses[4], losses
    accuracy = [r["eval/accuracy"] for r in read_metrics(run_dir) if "eval/accuracy" in r]
    assert accuracy and accuracy[-1] > 0.5, accuracy


def test_fashion_mnist_bf16_two_ranks(fashion_root, tmp_path):
    result = run_torchrun(2, "train", RECIPES / "fashion_mnist_mlp.yaml", "strategy=fsdp", "train.precision=bf16",
                          f"data.root={fashion_root}", f"run_dir={tmp_path}", *FASHION_SHORT)
    assert "strategy fsdp (sharded over 2 ranks)" in result.stdout
    check_fashion_run(tmp_path)


def test_one_process_runs_unsharded_like_single(tmp_path):
    """Documented rule: fsdp on one process has nothing to shard and trains unsharded, saying so at start-up;
    it is then the same computation as `single` (fp32): same losses."""
    args = [RECIPES / "mlp_regression.yaml", "train.max_steps=5", "train.log_every=1", "dataset.n_train=512",
            "dataset.n_eval=64", "optimizer.lr=0.05", "scheduler.warmup_steps=0"]
    fsdp = run_cli("train", *args, "strategy=fsdp", f"run_dir={tmp_path / 'fsdp'}")
    run_cli("train", *args, "strategy=single", f"run_dir={tmp_path / 'single'}")
    assert "strategy fsdp (1 process: unsharded)" in fsdp.stdout
    assert_close_losses(train_losses(tmp_path / "fsdp"), train_losses(tmp_path / "single"), rel=1e-6)
