"""The gpt recipe end to end through the CLI: it trains (the loss falls), logs tokens/s, prints the validation loss
against the unigram baseline and a generated sample; a missing data.path is one line, exit 2."""

from __future__ import annotations

import re

import pytest

from dist_train.config import load
from dist_train.errors import UsageError
from dist_train.recipe import resolve_recipe
from support import RECIPES, make_text, read_metrics, run_cli, train_losses

TINY = ["model.layers=2", "model.dim=32", "model.heads=4", "model.kv_heads=2", "model.seq_len=32",
        "train.batch_size=8", "train.max_steps=20", "train.log_every=5", "train.eval_every=20",
        "train.eval_batch_size=64", "scheduler.warmup_steps=5", "optimizer.lr=1e-2", "sample.length=24",
        "sample.prompt='the '"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return make_text(tmp_path_factory.mktemp("text") / "words.txt", n_chars=20000)


def test_trains_reports_the_baseline_and_samples(text, tmp_path):
    result = run_cli("train", RECIPES / "gpt.yaml", f"data.path={text}", f"run_dir={tmp_path}", *TINY)
    losses = train_losses(tmp_path)
    assert sorted(losses) == [5, 10, 15, 20] and losses[20] < 0.8 * losses[5], losses
    records = read_metrics(tmp_path)
    assert all(r["tokens_per_s"] > 0 for r in records if "loss" in r)
    eval_loss = [r["eval/loss"] for r in records if "eval/loss" in r][-1]
    baseline = float(result.stdout.split("unigram baseline ")[1].split(" nats/token")[0])
    assert eval_loss < baseline  # it learned more than the byte frequencies
    assert f"validation loss {eval_loss:.4f} nats/token vs unigram baseline {baseline:.4f}" in result.stdout
    sample = result.stdout.split("--- sample (temperature 0.8) ---\n")[1].split("\n---")[0]
    assert sample.startswith("the ") and len(sample.encode("utf-8", errors="replace")) >= 4 + 12


@pytest.mark.parametrize("path, message", [
    ("none.txt", "is neither a token shard folder (dist-train data prepare) nor a text file"),
    ("short.txt", "has 10 bytes, too few for model.seq_len 32"),
])
def test_unusable_data_path_is_a_usage_error(tmp_path, path, message):
    (tmp_path / "short.txt").write_text("0123456789")
    config = load(RECIPES / "gpt.yaml", [f"data.path={tmp_path / path}", *TINY])
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve_recipe(config.recipe)(config).build_datasets()
