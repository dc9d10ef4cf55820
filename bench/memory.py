"""Peak memory per rank of the gpt recipe under each strategy and mesh, next to the theoretical bytes per rank.

    python bench/memory.py --data data/jargon_bpe50k            # every strategy on 2 and 4 processes
    python bench/memory.py --data DIR --nproc 4 --only hsdp,tp2_fsdp2

Each configuration is its own `torchrun --standalone` launch (peak RSS is a per-process lifetime maximum, so
configurations cannot share processes). A rank measures its resident set after the imports and the process group
(`base`), trains `--steps` optimizer steps of `recipes/gpt_124m.yaml` (AdamW, fp32; sequence length and batch
kept small with --seq-len/--batch-size so activations stay a small part), and records the peak RSS of the process
(`ru_maxrss`) and, separately, the peak of training alone (VmHWM reset once the Trainer is built: without the
full model every rank builds before sharding it), with glibc told to serve blocks of 64 KiB and up by mmap
(MALLOC_MMAP_THRESHOLD_), so that freed tensors leave the resident set (--glibc-default: the heap keeps them, and
the peak counts every buffer ever freed). The final checkpoint is not written (the bench measures training, not a
1.4 GB save). The table shows, per configuration, the largest rank's peaks, and the theoretical bytes of parameters,
gradients and AdamW's two moments held by one rank as the strategy divides them (P = parameters, N = ranks):

    ddp 16P | fsdp 16P/N | HSDP R x S: 16P/S | tensor T x fsdp S: 16P/(T S) | ZeRO-1 8P + 8P/N | ZeRO-2 4P + 12P/N
    | ZeRO-3 16P/N

(+ one FSDP unit's full parameters while it runs; DeepSpeed also keeps flat fp32 copies and bucket buffers).
On CPU the peak RSS also counts the interpreter, torch's libraries and allocator slack, hence `base`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "recipes/gpt_124m.yaml"
# name -> (processes it runs on, overrides, theoretical divisor of the 16P bytes given (world size))
CONFIGS = {
    "ddp": ((2, 4), ["strategy=ddp"]),
    "fsdp": ((2, 4), ["strategy=fsdp"]),
    "hsdp_2x2": ((4,), ["strategy=fsdp", "fsdp.replicate=2"]),
    "tp2": ((2,), ["strategy=fsdp", "parallel.tensor=2"]),
    "tp2_fsdp2": ((4,), ["strategy=fsdp", "parallel.tensor=2"]),
    "zero1": ((2, 4), ["strategy=deepspeed", "deepspeed.zero_stage=1"]),
    "zero2": ((2, 4), ["strategy=deepspeed", "deepspeed.zero_stage=2"]),
    "zero3": ((2, 4), ["strategy=deepspeed", "deepspeed.zero_stage=3"]),
}


def theoretical_bytes(name: str, params: int, world: int) -> float:
    p = 4.0 * params  # fp32: parameters, gradients, then AdamW's exp_avg and exp_avg_sq
    if name == "ddp":
        return 4 * p
    if name == "zero1":
        return 2 * p + 2 * p / world
    if name == "zero2":
        return p + 3 * p / world
    if name.startswith("hsdp"):
        return 4 * p / (world // 2)
    return 4 * p / world  # fsdp, tensor x fsdp (every parameter split over all ranks), ZeRO-3


def status_bytes(field: str) -> int:
    """A size from /proc/self/status: VmRSS (resident now) or VmHWM (the peak since start or the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> None:
    """Restart the VmHWM peak from the current resident set (Linux: proc(5), /proc/PID/clear_refs value 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(config_path: str, overrides: list[str], out: Path) -> None:
    import torch

    from dist_train import cluster, distributed
    from dist_train.config import load
    from dist_train.runner import Trainer

    env = cluster.detect()
    device = torch.device("cpu")
    distributed.init(env, device)
    if any(o == "strategy=deepspeed" for o in overrides):
        import deepspeed  # noqa: F401 - in `base`: the library, not the model, costs this much

    base = status_bytes("VmRSS")
    trainer = Trainer(load(REPO / config_path, overrides), env, device)
    trainer.save_checkpoint = lambda *args, **kwargs: None  # measure training, not the final save
    reset_peak()  # from here: training alone, without building the full model before sharding it
    try:
        trainer.fit()
        training = status_bytes("VmHWM")
        params = trainer.strategy.num_parameters()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out.joinpath(f"rank{env.rank}.json").write_text(json.dumps({"base": base, "peak": peak, "training": training,
                                                                    "params": params}))
        distributed.barrier()  # no rank tears the group down while another is still in the run's last collective
    finally:
        trainer.release()
        distributed.shutdown()


def launch(name: str, nproc: int, overrides: list[str], args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"data.path={args.data}", f"run_dir={tmp}/run", f"train.max_steps={args.steps}",
                  f"train.batch_size={args.batch_size}", f"model.seq_len={args.seq_len}", "train.log_every=1",
                  f"train.eval_every={10 * args.steps}", "sample.length=0", "checkpoint.resume=never",
                  "train.precision=fp32",  # the bytes below are fp32's (and bf16 matmuls crawl on CPUs without it)
                  "train.eval_batch_size=1", "dataset.val_fraction=0.001"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", __file__,
               "--worker", tmp, args.config, *common, *overrides]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        if not args.glibc_default:
            # Blocks of 64 KiB and up straight from mmap, returned to the OS when freed: the peak RSS then follows
            # the live tensors. With glibc's default (a threshold that grows up to 32 MiB) freed tensors stay in
            # the heap, and the peak counts every all-gather/reduce-scatter buffer FSDP or ZeRO ever freed.
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        ranks = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))]
        # A rank that died after writing its figures (a gloo teardown race at exit) does not void the measurement.
        if len(ranks) != nproc:
            sys.exit(f"{name} on {nproc} processes failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    worst = max(ranks, key=lambda r: r["peak"])
    params = ranks[0]["params"]
    return {"name": name, "nproc": nproc, "peak": worst["peak"], "above_base": worst["peak"] - worst["base"],
            "training": max(r["training"] - r["base"] for r in ranks), "params": params,
            "theory": theoretical_bytes(name, params, nproc)}


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--worker":
        return worker(sys.argv[3], sys.argv[4:], Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="token shard folder (dist-train data prepare) for gpt_124m")
    parser.add_argument("--config", default=CONFIG, help=f"recipe YAML, relative to the repository (default {CONFIG})")
    parser.add_argument("--nproc", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated configuration names")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--glibc-default", action="store_true",
                        help="keep glibc's malloc settings (freed memory stays in the heap, and in the peak)")
    args = parser.parse_args()
    gib = 2 ** 30
    print("| strategy | processes | peak RSS / rank (GiB) | peak - base (GiB) | training peak - base (GiB) | "
          "theoretical params + grads + AdamW / rank (GiB) |\n|---|---|---|---|---|---|", flush=True)
    for nproc in args.nproc:
        for name in args.only.split(","):
            counts, overrides = CONFIGS[name]
            if nproc in counts:
                row = launch(name, nproc, overrides, args)
                print(f"| {name} | {nproc} | {row['peak'] / gib:.2f} | {row['above_base'] / gib:.2f} | "
                      f"{row['training'] / gib:.2f} | {row['theory'] / gib:.2f} |  "
                      f"<!-- {row['params']:,} parameters -->", flush=True)


if __name__ == "__main__":
    main()
