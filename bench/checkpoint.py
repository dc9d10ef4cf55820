"""What a checkpoint costs the training loop: the stall of each save (sync and async), against `torch.save` of the
same state to the same disk, and the time to verify a checkpoint at resume.

    python bench/checkpoint.py --work mnist --data-root data                   # the 1.4 MB Fashion-MNIST MLP
    python bench/checkpoint.py --work mnist --data-root data --async
    python bench/checkpoint.py --work 120mb [--async]                          # 120 MB of state, 1 process
    torchrun --standalone --nproc-per-node 2 bench/checkpoint.py --work 1gb    # ~1 GB of state, FSDP on 2 ranks
    python bench/checkpoint.py --work mnist --data-root data --profile         # where one sync save's time goes

A real Trainer trains one step (so the optimizer state exists), then saves `--repeats` times through
`Trainer.save_checkpoint`, the call the loop makes (keep-N pruning included). Each rank also `torch.save`s its
own model + optimizer state dict into the same run_dir, with and without fsync, copies it in memory, and saves it
with bare `dcp.save` (DCP's FileSystemWriter, no fsync): the yardsticks for a sync save (torch.save), an async one
(the copy) and what the DCP format itself costs. `verify` is a
fresh Checkpointer's `find_resume()` (resume: auto), every rank, as at the start of a resumed run. Rank 0 prints
medians. Set OMP_NUM_THREADS=1 under torchrun on a small machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dist_train import cluster, distributed  # noqa: E402
from dist_train.checkpoint import Checkpointer  # noqa: E402
from dist_train.config import load  # noqa: E402
from dist_train.runner import Trainer  # noqa: E402
from dist_train.tracking import NoTracker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKS = {
    # The default recipe's model: 109k parameters, 1.3 MB of weights + AdamW moments.
    "mnist": (ROOT / "recipes" / "fashion_mnist_mlp.yaml", []),
    # Linear(4096 -> 2440) + Linear(2440 -> 1): 10M parameters, 120 MB of weights + AdamW moments (fp32).
    "120mb": (ROOT / "recipes" / "mlp_regression.yaml",
              ["dataset.in_features=4096", "model.hidden=2440", "dataset.n_train=64", "dataset.n_eval=8"]),
    # Linear(4096 -> 21800) + Linear(21800 -> 1): 89M parameters, 1.07 GB of weights + AdamW moments (fp32).
    "1gb": (ROOT / "recipes" / "mlp_regression.yaml",
            ["dataset.in_features=4096", "model.hidden=21800", "dataset.n_train=256", "dataset.n_eval=8",
             "train.batch_size=8"]),
}


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def timed(fn) -> float:
    """Seconds `fn` takes on the slowest rank. Every rank starts together, with no dirty pages left from what ran
    before (os.sync, not timed): otherwise whatever runs next pays for the write-back of what ran before."""
    os.sync()
    barrier()
    start = time.perf_counter()
    fn()
    elapsed = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)
    return float(elapsed)


def torch_save(state: dict, path: Path, fsync: bool) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", choices=sorted(WORKS), default="mnist")
    p.add_argument("--strategy", default="auto", help="auto: single on 1 process; fsdp for --work 1gb under torchrun")
    p.add_argument("--data-root", default="data", help="Fashion-MNIST files (dist-train data fetch fashion-mnist)")
    p.add_argument("--run-dir", help="where checkpoints go (default: a temporary folder under the current one)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--async", dest="async_save", action="store_true", help="checkpoint.async=true")
    p.add_argument("--profile", action="store_true", help="cProfile one sync save on rank 0, print the top entries")
    args = p.parse_args()

    yaml, extra = WORKS[args.work]
    env = cluster.detect()
    strategy = args.strategy
    if strategy == "auto" and args.work == "1gb" and env.world_size > 1:
        strategy = "fsdp"
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir="."))
    overrides = [*extra, f"run_dir={run_dir}", f"strategy={strategy}", f"data.root={args.data_root}",
                 "train.max_steps=1", "scheduler.warmup_steps=0", "train.log_every=1", "train.eval_every=100000",
                 f"checkpoint.async={str(args.async_save).lower()}", "checkpoint.resume=never"]
    try:
        run(args, env, load(yaml, overrides), run_dir)
    finally:
        if env.is_main and not args.run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


def run(args, env, config, run_dir: Path) -> None:
    device = torch.device("cpu")
    distributed.init(env, device)
    trainer = Trainer(config, env, device)
    trainer.fit()  # one step, then the end-of-run save (step_1)
    trainer.trackers = NoTracker()  # fit() closed them; the saves below log nothing

    strategy_obj = trainer.strategy
    state = {"model": strategy_obj.unwrapped_model.state_dict(), "optim": strategy_obj.optimizer.state_dict()}
    local = [t.to_local() if hasattr(t, "to_local") else t for t in _tensors(state)]  # FSDP: this rank's shard
    state_bytes = sum(t.numel() * t.element_size() for t in local)
    total = torch.tensor(state_bytes, dtype=torch.float64)
    if env.is_distributed:
        torch.distributed.all_reduce(total)

    if args.profile:
        _profile(trainer, env, args.async_save)
    stalls, waits, plain, plain_fsync, copies, bare = [], [], [], [], [], []
    for i in range(args.repeats):
        step = 2 + i
        stalls.append(timed(lambda: trainer.save_checkpoint(step, blocking=not args.async_save)))
        if args.async_save:
            waits.append(timed(trainer.checkpointer.wait))
        if hasattr(trainer.checkpointer, "flush"):  # its fsyncs run in the background: not into the next timings
            trainer.checkpointer.flush()
        path = run_dir / f"torch_save_rank{env.rank}.pt"
        plain.append(timed(lambda: torch_save(state, path, fsync=False)))
        plain_fsync.append(timed(lambda: torch_save(state, path, fsync=True)))
        path.unlink()
        copies.append(timed(lambda: _clone(strategy_obj._dcp_state())))  # what an async save must at least do
        bare.append(timed(lambda: _dcp_save(strategy_obj, run_dir / f"bare_dcp_{i}", env)))  # the format's floor
    resume_cfg = type(config.checkpoint)(**{**vars(config.checkpoint), "resume": "auto"})
    verify = [timed(lambda: Checkpointer(resume_cfg, run_dir / "checkpoints", env).find_resume())
              for _ in range(max(3, args.repeats // 4))]

    if env.is_main:
        # Median and, in brackets, the fastest repeat: on a shared machine single writes stall for seconds at times.
        ms = lambda xs: f"{1000 * statistics.median(xs):.1f} ms ({1000 * min(xs):.1f})"  # noqa: E731
        mode = "async" if args.async_save else "sync"
        print(f"work {args.work}: {total.item() / 1e6:.1f} MB of model + optimizer state over {env.world_size} "
              f"rank(s), strategy {trainer.strategy.name}, {mode} save, {args.repeats} repeats, load "
              f"{os.getloadavg()[0]:.2f}")
        print("  median (fastest) of the repeats")
        print(f"  save stall                   {ms(stalls)}")
        if waits:
            print(f"  background write + commit    {ms(waits)}")
        print(f"  torch.save, same state       {ms(plain)}  (with fsync {ms(plain_fsync)})")
        print(f"  copy of the state in memory  {ms(copies)}")
        print(f"  dcp.save alone, no fsync     {ms(bare)}")
        print(f"  stall / torch.save           {statistics.median(stalls) / statistics.median(plain):.2f} "
              f"({min(stalls) / min(plain):.2f})")
        print(f"  verify at resume             {ms(verify)}")
    trainer.release()
    distributed.shutdown()


def _dcp_save(strategy, folder: Path, env) -> None:
    """DCP's own FileSystemWriter, nothing around it (no manifest, hashing, commit or fsync)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(strategy._dcp_state(), storage_writer=dcp.FileSystemWriter(folder, sync_files=False),
             no_dist=not env.is_distributed)
    barrier()
    if env.is_main:
        shutil.rmtree(folder, ignore_errors=True)


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _profile(trainer, env, async_save: bool) -> None:
    import cProfile
    import pstats

    trainer.save_checkpoint(1000, blocking=not async_save)  # warm
    trainer.checkpointer.wait()
    os.sync()
    profiler = cProfile.Profile()
    barrier()
    profiler.enable()
    trainer.save_checkpoint(1001, blocking=not async_save)
    profiler.disable()
    trainer.checkpointer.wait()
    if env.is_main:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    main()
