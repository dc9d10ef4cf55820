"""A streaming source under the real trainer and torchrun: 2 ranks with uneven shards end each epoch together
(no hang), a run stopped mid-shard resumes exactly, and the checkpoint resumes on 1 process at shard-offset
granularity."""

from __future__ import annotations

import re
import shutil

from dist_train.data.index import read_index
from dist_train.data.streaming import shard_plan
from support import RECIPES, make_text, read_metrics, run_cli, run_torchrun, train_losses

# accum 1, batch 8 windows of 16 tokens per rank; 2 workers per rank
RUN = ["recipe=tests/data/stream_recipe.py:StreamingCharLM", "dataset.block_size=16", "model.dim=16",
       "model.layers=1", "model.heads=2", "model.dropout=0", "train.batch_size=8", "train.max_steps=12",
       "train.log_every=1", "train.eval_every=12", "train.eval_batch_size=64", "scheduler.warmup_steps=0",
       "sample.length=0", "data.num_workers=2", "checkpoint.every=4"]


def test_streaming_source_uneven_ranks_stop_resume_exact(tmp_path):
    (tmp_path / "text").mkdir()
    for i in range(3):
        make_text(tmp_path / "text" / f"part{i}.txt", n_chars=1000, seed=i)
    shards = tmp_path / "shards"
    run_cli("data", "prepare", tmp_path / "text", "--out", shards, "--shard-tokens", "650")  # 4 x 650 + ~400
    # Epoch 0 deals the 5 shards to 2 ranks x 2 workers: one rank gets 3, the other 2. Batches per rank (each
    # worker batches its shards' windows of 16 tokens by 8, dropping its last partial batch):
    windows = [(s.tokens - 1) // 16 for s in read_index(shards).shards]
    batches = [sum(sum(windows[i] for i in shard_plan(5, 0, 0, 2 * r + w, 4)) // 8 for w in (0, 1)) for r in (0, 1)]
    assert batches[0] != batches[1]
    args = ["train", RECIPES / "char_lm.yaml", f"data.path={shards}", *RUN]
    ref = run_torchrun(2, *args, f"run_dir={tmp_path / 'ref'}", timeout=600)
    assert "streaming, ? steps/epoch" in ref.stdout
    epochs = {r["step"]: r["epoch"] for r in read_metrics(tmp_path / "ref") if "epoch" in r}
    # Epoch 1 starts when the rank with fewer batches runs out; the other rank's rest is dropped, nobody hangs.
    assert min(s for s, e in epochs.items() if e == 1) == min(batches) + 1
    run = tmp_path / "run"
    run_torchrun(2, *args, f"run_dir={run}", timeout=600, DIST_TRAIN_TEST_STOP_AFTER_STEP=6)
    shutil.copytree(run, tmp_path / "elastic")
    resumed = run_torchrun(2, *args, f"run_dir={run}", timeout=600)
    assert "resumed from" in resumed.stdout
    assert train_losses(run) == train_losses(tmp_path / "ref")  # exact, steps 1-6 and 7-12
    one = run_cli(*args, f"run_dir={tmp_path / 'elastic'}", timeout=600)
    assert re.search(r"data: streaming position saved by 2 ranks x 2 workers, resumed on 1 x 2: epoch \d goes on",
                     one.stdout)
    assert sorted(train_losses(tmp_path / "elastic")) == list(range(1, 13))
