"""Data for training: the world-size-invariant order and batch layout, map-style and streaming loaders, token
shards on disk and the memory-mapped dataset over them.

The rule everything here keeps: the samples of a global step depend only on (seed, epoch, global batch), so
1 process x grad_accum 2 trains on exactly what 2 processes x grad_accum 1 do, and a map-style run resumes at
(epoch, step in epoch) by arithmetic. See docs/data.md for the formats and guarantees.

Names are imported on first use, so that `dist-train data prepare` (dist_train.data.prepare: numpy and tokenizers
only) and its worker processes never pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BatchLayout": "layout", "micro_batch_indices": "layout", "steps_per_epoch": "layout",
    "BatchDataset": "loading", "InMemoryDataset": "loading", "eval_batches": "loading", "fetch": "loading",
    "seed_everything": "loading", "to_device": "loading", "train_batches": "loading",
    "EpochOrder": "order", "epoch_order": "order",
    "ShardIndex": "index", "read_index": "index", "verify_shards": "index",
    "TokenShards": "tokens", "TokenWindows": "tokens",
    "ShardedStream": "streaming", "TokenShardStream": "streaming", "JsonlStream": "streaming",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dist_train.data' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"dist_train.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
