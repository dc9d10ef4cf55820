"""The gpt recipe end to end through the CLI on token shards from `dist-train data prepare` (BPE, several shard
files): it trains (the loss falls), logs tokens/s, prints the validation loss against the unigram baseline and a
generated sample decoded by the shards' tokenizer. (A text file, read as bytes in memory, is what the 4-process
mesh tests train on: tests/strategies/test_parallelize.py.) An unusable data.path is a usage error."""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module")
def shards(text):
    out = text.parent / "shards"
    run_cli("data", "prepare", text, "--out", out, "--tokenizer", "bpe:320", "--shard-tokens", "2000")
    assert len(list(out.glob("*.bin"))) >= 2
    return out


def test_trains_on_shards_reports_the_baseline_and_samples(text, shards, tmp_path):
    result = run_cli("train", RECIPES / "gpt.yaml", f"data.path={shards}", f"run_dir={tmp_path}", *TINY)
    vocab = json.loads((shards / "index.json").read_text())["vocab_size"]
    assert f"shards, bpe tokenizer), vocabulary {vocab}," in result.stdout
    losses = train_losses(tmp_path)
    assert sorted(losses) == [5, 10, 15, 20] and losses[20] < 0.8 * losses[5], losses
    records = read_metrics(tmp_path)
    assert all(r["tokens_per_s"] > 0 for r in records if "loss" in r)
    eval_loss = [r["eval/loss"] for r in records if "eval/loss" in r][-1]
    baseline = float(result.stdout.split("unigram baseline ")[1].split(" nats/token")[0])
    assert eval_loss < baseline  # it learned more than the byte frequencies
    assert f"validation loss {eval_loss:.4f} nats/token vs unigram baseline {baseline:.4f}" in result.stdout
    sample = result.stdout.split("--- sample (temperature 0.8) ---\n")[1].split("\n---")[0]
    words = set(text.read_text(encoding="utf-8").split())
    assert sample.startswith("the ") and len(sample) > 24 and set(sample.split()[:-1]) & words


@pytest.mark.parametrize("path, message", [
    ("none.txt", "is neither a token shard folder (dist-train data prepare) nor a text file"),
    ("short.txt", "has 10 bytes, too few for model.seq_len 32"),
])
def test_unusable_data_path_is_a_usage_error(tmp_path, path, message):
    (tmp_path / "short.txt").write_text("0123456789")
    config = load(RECIPES / "gpt.yaml", [f"data.path={tmp_path / path}", *TINY])
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve_recipe(config.recipe)(config).build_datasets()
