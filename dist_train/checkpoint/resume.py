"""Where a resumed run picks up, including on another world size.

The data order depends only on the seed, the epoch and the global batch (dist_train/data.py), so a run resumes at
(epoch, step in epoch) by arithmetic, with no replay of the loader. On another world size the global batch is kept
by changing grad_accum when it divides evenly; then every sample of the epoch is seen exactly once, as without the
interruption. When it cannot be kept the run goes on with the configured global batch and says so; the position
is rounded up to the next whole step, skipping the few samples of the epoch in between (reported).
"""

from __future__ import annotations

import dataclasses

from dist_train import distributed
from dist_train.checkpoint.manifest import Manifest
from dist_train.data import BatchLayout


def batch_layout(config, env, resume: Manifest | None) -> BatchLayout:
    """The batch layout of this run, derived once: the config's, or on a resume from another world size the one
    that keeps the checkpoint's global batch. The strategy and the data order receive it; the config stays as given.
    It spans the data-parallel ranks (dist_train.parallel_dims): the ranks of a tensor-parallel group share one
    place in it, as they read the same batch."""
    from dist_train.parallel_dims import ParallelDims

    dims = ParallelDims.from_config(config, env.world_size)
    layout = BatchLayout(config.train.batch_size, config.train.grad_accum, dims.dp, dims.dp_rank(env.rank))
    return layout if resume is None else keep_global_batch(resume, layout)


def keep_global_batch(manifest: Manifest, layout: BatchLayout) -> BatchLayout:
    if manifest.global_batch == layout.global_batch:
        return layout
    per_accum_step = layout.batch_size * layout.world_size
    if manifest.global_batch % per_accum_step == 0:
        accum = manifest.global_batch // per_accum_step
        distributed.print0(
            f"checkpoint: saved with global batch {manifest.global_batch} ({manifest.world_size} processes); on "
            f"{layout.world_size} processes train.grad_accum {layout.grad_accum} -> {accum} keeps it"
        )
        return dataclasses.replace(layout, grad_accum=accum)
    distributed.print0(
        f"checkpoint: saved with global batch {manifest.global_batch}; batch_size {layout.batch_size} x "
        f"{layout.world_size} processes cannot make it with any grad_accum, so training goes on with global batch "
        f"{layout.global_batch} (losses will differ from an uninterrupted run)"
    )
    return layout


def data_position(position: tuple[int, int], global_batch: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epoch, step in epoch) of the next step, from (epoch, samples of it consumed)."""
    epoch, samples = position
    step = -(-samples // global_batch)
    if step * global_batch != samples:
        distributed.print0(
            f"checkpoint: {samples} samples of epoch {epoch} were consumed, not a multiple of the global batch "
            f"{global_batch}; skipping {step * global_batch - samples} samples to the next whole step"
        )
    if step >= steps_per_epoch:
        return epoch + 1, 0
    return epoch, step
