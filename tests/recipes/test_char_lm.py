"""char_lm: every arch trains on a generated UTF-8 text; the transformer also under 2-process DDP; bpc against the
unigram baseline and a sample are printed at the end; missing and non-UTF-8 files are one-line errors."""

from __future__ import annotations

import pytest

from support import RECIPES, make_text, read_metrics, run_cli, run_torchrun, train_losses

TINY = ["dataset.block_size=16", "model.dim=16", "model.layers=1", "model.heads=2", "train.batch_size=8",
        "train.max_steps=8", "train.log_every=1", "train.eval_every=4", "train.eval_batch_size=64",
        "scheduler.warmup_steps=0", "optimizer.lr=1e-2", "sample.length=40", "sample.prompt='the '"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return make_text(tmp_path_factory.mktemp("text") / "words.txt", n_chars=6000)


@pytest.mark.parametrize("arch, nproc", [("transformer", 1), ("lstm", 1), ("gru", 1), ("transformer", 2)])
def test_trains_and_samples(text, tmp_path, arch, nproc):
    args = ["train", RECIPES / "char_lm.yaml", f"data.path={text}", f"run_dir={tmp_path}", f"model.arch={arch}", *TINY]
    result = run_cli(*args) if nproc == 1 else run_torchrun(2, *args, timeout=600)
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(1, 9)) and losses[8] < losses[1]
    bpc = [r["eval/bpc"] for r in read_metrics(tmp_path) if "eval/bpc" in r]
    assert len(bpc) == 2 and bpc[-1] > 0
    assert "unigram baseline" in result.stdout and "bits/char vs unigram baseline" in result.stdout
    sample = result.stdout.split("--- sample (temperature 0.8) ---\n")[1].split("\n---")[0]
    assert sample.startswith("the ") and len(sample) == 4 + 40
    assert set(sample) <= set(text.read_text(encoding="utf-8"))


def test_missing_text_names_the_fetch_command(tmp_path):
    r = run_cli("train", RECIPES / "char_lm.yaml", f"data.path={tmp_path}/none.txt", check=False)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not found" in r.stderr and "dist-train data fetch jargon" in r.stderr


def test_non_utf8_text_is_a_one_line_error(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café ".encode("latin-1") * 100)
    r = run_cli("train", RECIPES / "char_lm.yaml", f"data.path={bad}", check=False)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not UTF-8" in r.stderr
