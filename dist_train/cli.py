"""The `dist-train` command line. Only argparse here: each subcommand imports what it needs when it runs, so that
`dist-train --help` never pays for torch, deepspeed or wandb."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from dist_train import __version__
from dist_train.errors import RUN_ERROR_EXIT_CODE, USAGE_EXIT_CODE, RunError, UsageError


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser, and each subcommand's own parser by name (for errors in the subcommand's usage)."""
    parser = argparse.ArgumentParser(
        prog="dist-train",
        description="Train a recipe from one CPU process to a multi-node cluster with one config.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # The `deepspeed` launcher passes --local_rank=N before the subcommand; LOCAL_RANK in the environment has it too.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a run from a YAML config plus key=value overrides")
    add_train_args(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit")
    p.set_defaults(handler="dist_train.commands.train:main")

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on the eval set (any world size), print the metrics")
    p.add_argument("checkpoint", help="a checkpoint folder, e.g. runs/x/checkpoints/step_1000")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the checkpoint's config, e.g. data.root=... train.eval_batch_size=256")
    p.add_argument("--split", choices=["eval", "train"], default="eval", help="which dataset of the recipe (default eval)")
    p.add_argument("--weights", choices=["auto", "model", "ema"], default="auto",
                   help="auto: the EMA weights when the checkpoint has them (what training evaluated), else the model")
    p.add_argument("--recipe", help="the recipe to rebuild the model with (default: the bundled recipe the checkpoint "
                                    "names; a recipe in a file must be given here)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a line")
    p.set_defaults(handler="dist_train.commands.evaluate:main")

    p = sub.add_parser("launch", help="train under torchrun on N nodes x P processes per node (multi-node: c10d)")
    add_train_args(p)
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1: standalone rendezvous)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes per node, usually one per GPU")
    p.add_argument("--rdzv-endpoint", metavar="HOST[:PORT]", help="head node, the same on every node (multi-node)")
    p.add_argument("--rdzv-id", default="dist-train", help="job id shared by the nodes of one run")
    p.add_argument("--node-rank", type=int, help="this node's rank (optional with c10d rendezvous)")
    p.add_argument("--max-restarts", type=int, default=0, help="torchrun restarts after a worker failure")
    p.add_argument("--rdzv-timeout", type=float, default=60.0, help="seconds a node waits for the head's endpoint")
    p.add_argument("--dry-run", action="store_true", help="print the torchrun command instead of running it")
    p.set_defaults(handler="dist_train.commands.launch:main")

    p = sub.add_parser("sbatch", help="write a SLURM batch script for the run and submit it")
    add_train_args(p)
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (default 0: CPU)")
    p.add_argument("--procs-per-node", type=int, default=0, help="processes per node (default: one per GPU, or 1)")
    p.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    p.add_argument("--time", default="01:00:00", help="time limit, e.g. 04:00:00 (default 01:00:00)")
    p.add_argument("--job-name", default="dist-train")
    p.add_argument("--cpus-per-task", type=int, default=0, help="CPUs for each node's torchrun (default: SLURM's)")
    p.add_argument("--signal-lead", type=int, default=120, metavar="S",
                   help="seconds before the time limit at which to checkpoint and requeue (default 120)")
    p.add_argument("--max-restarts", type=int, default=0,
                   help="torchrun restarts of the workers within a job attempt, e.g. after a hang (default 0)")
    p.add_argument("--dry-run", action="store_true", help="print the script instead of writing and submitting it")
    p.set_defaults(handler="dist_train.commands.sbatch:main")

    p = sub.add_parser("data", help="get a real dataset; tokenize text into shards (prepare, verify)")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = data_sub.add_parser("fetch", help="fetch a dataset (fashion-mnist, jargon, cifar10)")
    f.add_argument("name", help="dataset name: fashion-mnist, jargon (text for char_lm), cifar10 (needs --download)")
    f.add_argument("--root", default="data", help="data root the recipe reads (data.root), default: data")
    f.add_argument("--download", action="store_true", help="download with torchvision (needs internet)")
    f.set_defaults(handler="dist_train.commands.data:main")
    f = data_sub.add_parser("prepare", help="tokenize UTF-8 text files into token shards + index.json")
    f.add_argument("inputs", nargs="+", metavar="INPUT", help="UTF-8 text files, or folders of them (recursive)")
    f.add_argument("--out", required=True, metavar="DIR", help="new folder for the shards (data.path of a recipe)")
    f.add_argument("--tokenizer", default="byte", metavar="SPEC",
                   help="byte (default) | bpe:VOCAB (train a byte-level BPE on the input) | path/to/tokenizer.json")
    f.add_argument("--workers", type=int, default=1, help="tokenizing processes (default 1)")
    f.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard file (default 1e8)")
    f.add_argument("--bpe-train-mb", type=float, default=1024.0,
                   help="MB of text sampled across the input to train bpe:VOCAB on (default 1024)")
    f.set_defaults(handler="dist_train.commands.data:prepare")
    f = data_sub.add_parser("verify", help="check a prepared folder's shards against its index.json")
    f.add_argument("folder", metavar="DIR")
    f.set_defaults(handler="dist_train.commands.data:verify")

    p = sub.add_parser("plot", help="PNG of loss, lr and eval metrics vs step for one or more runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run_dir of a run; several are overlaid")
    p.add_argument("--out", help="PNG to write (default: RUN_DIR/metrics.png for one run, ./metrics.png for several)")
    p.set_defaults(handler="dist_train.commands.plot:main")

    p = sub.add_parser("summary", help="one table of a run: config, final/best metrics, time, throughput")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(handler="dist_train.commands.summary:main")
    p = sub.add_parser("export", help="write one consolidated model file from a checkpoint (any strategy)")
    p.add_argument("checkpoint", help="a checkpoint folder, e.g. runs/x/checkpoints/step_1000")
    p.add_argument("--format", required=True, choices=["torchscript", "onnx", "state_dict"], help="output format")
    p.add_argument("--out", help="output file (default: RUN_DIR/export/step_<N>.<ext>)")
    p.add_argument("--recipe", help="the recipe to rebuild the model with (default: the bundled recipe the checkpoint "
                                    "names; a recipe in a file must be given here)")
    p.add_argument("--weights", choices=["auto", "model", "ema"], default="auto",
                   help="auto: the EMA weights when the checkpoint has them (what training evaluated), else the model")
    p.set_defaults(handler="dist_train.commands.export:main")

    p = sub.add_parser("sweep", help="run a hyper-parameter sweep and rank the trials by an eval metric")
    p.add_argument("config", help="YAML config file; trials run under its run_dir as trial_NNN")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every trial")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="crossed axis (repeatable)")
    p.add_argument("--random", action="append", default=[], metavar="KEY=V1,V2",
                   help="axis drawn at random per trial (repeatable)")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: one per grid combination)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--metric", help="eval metric to rank by (default: train.early_stopping.metric, else loss)")
    p.add_argument("--mode", choices=["min", "max"], help="min or max is best (default: from early_stopping, else min)")
    p.add_argument("--nproc", type=int, default=1, help="processes per trial (torchrun --standalone)")
    p.add_argument("--slurm", action="store_true", help="submit the trials as a SLURM job array instead")
    p.add_argument("--partition", help="with --slurm: SLURM partition (default: the cluster's default)")
    p.add_argument("--time", default="01:00:00", help="with --slurm: time limit of each trial (default 01:00:00)")
    p.add_argument("--collect", action="store_true", help="only print the ranked table of trials already run")
    p.set_defaults(handler="dist_train.commands.sweep:main")
    return parser, dict(sub.choices)


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file, e.g. recipes/fashion_mnist_mlp.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.max_steps=50")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """argparse takes `key=value` words only right after CONFIG; after an option they come back unrecognised.
    Those become overrides (in command-line order), so overrides work anywhere on the line; anything else unknown
    is reported with the subcommand's own usage."""
    parser, subcommands = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        usage = subcommands.get(args.command, parser)
        stray = [a for a in extra if a.startswith("-") or "=" not in a]
        if stray or not hasattr(args, "overrides"):
            usage.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    module_name, _, func = args.handler.partition(":")
    try:
        code = getattr(importlib.import_module(module_name), func)(args)
    except (UsageError, RunError) as e:
        rank = os.environ.get("RANK", "0")
        prefix = "dist-train: error: " if rank == "0" else f"dist-train: error (rank {rank}): "
        print(prefix + str(e), file=sys.stderr, flush=True)
        sys.exit(USAGE_EXIT_CODE if isinstance(e, UsageError) else RUN_ERROR_EXIT_CODE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)
