"""Input pipeline speed: data-only samples/s of the training loader against what a training step consumes.

    dist-train data fetch jargon --root data && dist-train data prepare data/jargon.txt --out data/jargon_shards
    python bench/data_loader.py data/jargon.txt          # the char_lm recipe's text file (in memory)
    python bench/data_loader.py data/jargon_shards       # the same text as token shards (memory-mapped)

Data-only: the char_lm recipe's training set for that data.path (windows of `--seq`), read by the rank's loader
(dist_train.data.train_batches, the training order) in batches of `--batch`, for `--seconds` each with
data.num_workers 0 and 2. Demand: the char_lm transformer (default model) trained on it with data.num_workers 2
for `--steps` steps, whose samples/s and data_wait_share (time waiting for the next batch / wall time, second
half of the run) come from its metrics.jsonl.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dist_train.config import load  # noqa: E402
from dist_train.data import BatchLayout, train_batches  # noqa: E402
from dist_train.recipe import resolve_recipe  # noqa: E402
from dist_train.tracking.jsonl import read_run_metrics  # noqa: E402

CONFIG = REPO / "recipes" / "char_lm.yaml"


def data_only(dataset, batch: int, workers: int, seconds: float) -> float:
    batches = train_batches(dataset, BatchLayout(batch, 1, 1, 0), seed=0, start_epoch=0, start_step_in_epoch=0,
                            num_workers=workers)
    next(batches)  # worker start-up is not throughput
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        next(batches)
        n += batch
    return n / (time.perf_counter() - start)


def training(path: str, seq: int, batch: int, steps: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [sys.executable, "-m", "dist_train", "train", str(CONFIG),
               f"data.path={path}", f"data.num_workers={workers}", f"dataset.block_size={seq}",
               f"train.batch_size={batch}", f"train.max_steps={steps}", f"train.log_every={steps // 2}",
               "train.eval_every=100000", "sample.length=0", "checkpoint.resume=never", "train.early_stopping=null",
               f"run_dir={run_dir}"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run(cmd, check=True, env=env, cwd=REPO, capture_output=True)
        # The second window: the first holds start-up (worker launch, first batches).
        return [r for r in read_run_metrics(run_dir) if "data_wait_share" in r][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="data.path of char_lm: a UTF-8 text file or a folder from data prepare")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    config = load(CONFIG, [f"data.path={args.path}", f"dataset.block_size={args.seq}"])
    dataset, _ = resolve_recipe(config.recipe)(config).build_datasets()
    print(f"{args.path}: {type(dataset).__name__} of {len(dataset):,} windows of {args.seq}, batch {args.batch}")
    for workers in (0, 2):
        rate = data_only(dataset, args.batch, workers, args.seconds)
        print(f"data only, num_workers {workers}: {rate:,.0f} samples/s")
    m = training(args.path, args.seq, args.batch, args.steps, workers=2)
    print(f"char_lm transformer, num_workers 2: {m['samples_per_s']:,.1f} samples/s, data_wait_share "
          f"{100 * m['data_wait_share']:.2f}% (steps {args.steps // 2 + 1}-{args.steps})")


if __name__ == "__main__":
    main()
