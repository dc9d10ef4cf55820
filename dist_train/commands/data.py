"""`dist-train data fetch NAME`: put a real dataset where its recipe looks (no network needed where a package has it)."""

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
