"""char_lm: every arch trains on a generated UTF-8 text; the transformer also under 2-process DDP; bpc against the
unigram baseline and a sample are printed at the end; missing and non-UTF-8 files are one-line errors."""

from __future__ import annotations

import re

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


SHARD_RUN = [*TINY, "model.dropout=0", "train.max_steps=6", "train.eval_every=6", "train.batch_size=4",
             "sample.length=20"]


@pytest.fixture(scope="module")
def token_shards(tmp_path_factory):
    """Three text files prepared into byte-level shards of 3000 tokens: windows cross shard and file ends."""
    root = tmp_path_factory.mktemp("shard_text")
    for i in range(3):
        make_text(root / f"part{i}.txt", n_chars=4000, seed=i)
    out = root / "shards"
    run_cli("data", "prepare", root, "--out", out, "--shard-tokens", "3000")
    return out


def test_token_shards_prepare_train_stop_resume_exact_and_layout_invariant(token_shards, tmp_path):
    args = ["train", RECIPES / "char_lm.yaml", f"data.path={token_shards}", *SHARD_RUN]
    reference = run_cli(*args, f"run_dir={tmp_path / 'ref'}", "train.grad_accum=2")
    assert re.search(r"token shards: 12,\d{3} tokens in 5 shards \(byte\), vocabulary 257", reference.stdout)
    assert "bits/token vs unigram baseline" in reference.stdout
    run = tmp_path / "resumed"
    first = run_cli(*args, f"run_dir={run}", "train.grad_accum=2", DIST_TRAIN_TEST_STOP_AFTER_STEP=3)
    assert "done: 3 steps" in first.stdout
    second = run_cli(*args, f"run_dir={run}", "train.grad_accum=2")
    assert "resumed from" in second.stdout
    ref = train_losses(tmp_path / "ref")
    assert train_losses(run) == ref and sorted(ref) == list(range(1, 7))  # exact: steps 1-3 and 4-6
    run_torchrun(2, *args, f"run_dir={tmp_path / 'ddp'}", "train.grad_accum=1", timeout=600)
    ddp = train_losses(tmp_path / "ddp")  # 2 x accum 1: the same samples per step; only float summation differs
    assert ddp.keys() == ref.keys() and all(abs(ddp[s] - ref[s]) <= 1e-5 * abs(ref[s]) for s in ref)


def test_truncated_shard_is_one_line_naming_file_and_offset(token_shards, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(token_shards, broken)
    (broken / "shard_00002.bin").write_bytes((broken / "shard_00002.bin").read_bytes()[:777])
    r = run_cli("train", RECIPES / "char_lm.yaml", f"data.path={broken}", f"run_dir={tmp_path / 'run'}", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "shard_00002.bin: truncated at byte offset 777; index.json says 6000 bytes" in r.stderr
