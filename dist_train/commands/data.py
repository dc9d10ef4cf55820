"""`dist-train data fetch NAME`: put a real dataset where its recipe looks (no network needed where a package has it).
`dist-train data prepare INPUT... --out DIR`: tokenize text into token shards (dist_train.data.prepare).
`dist-train data verify DIR`: check a prepared folder against its index.json, every byte."""

from __future__ import annotations

import importlib

from dist_train.errors import UsageError, closest, one_of

SOURCES = {
    "fashion-mnist": "dist_train.datasets.fashion_mnist",
    "jargon": "dist_train.datasets.jargon",
    "cifar10": "dist_train.datasets.cifar10",
}


def main(args) -> int:
    if args.name not in SOURCES:
        raise UsageError(f"data fetch: unknown dataset '{args.name}'{closest(args.name, SOURCES)}; "
                         f"available: {one_of(SOURCES)}")
    source = importlib.import_module(SOURCES[args.name])
    where = source.fetch(args.root, download=args.download)
    print(f"{args.name}: ready in {where}")
    return 0


def prepare(args) -> int:
    from dist_train.data.prepare import prepare as run

    done = run(args.inputs, args.out, args.tokenizer, args.workers, args.shard_tokens, args.bpe_train_mb)
    index, mb = done.index, done.bytes / 1e6
    trained = f"; BPE training {done.train_seconds:.1f} s" if index.tokenizer["kind"] == "bpe" else ""
    print(f"{index.folder}: {index.total_tokens:,} tokens ({index.dtype}, vocabulary {index.vocab_size:,}, "
          f"{index.tokenizer['kind']}) in {len(index.shards)} shard(s) from {done.files} file(s), {mb:,.1f} MB in "
          f"{done.seconds:.1f} s = {mb / max(done.seconds, 1e-9):,.1f} MB/s with {args.workers} worker(s){trained}")
    return 0


def verify(args) -> int:
    from dist_train.data.index import read_index, verify_shards

    index = read_index(args.folder, key="data verify")
    verify_shards(index, full=True, key="data verify")
    print(f"{index.folder}: {len(index.shards)} shard(s), {index.total_tokens:,} tokens: every block matches "
          "index.json")
    return 0
