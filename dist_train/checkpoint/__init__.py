"""Checkpoints: atomic step_<N> folders under run_dir/checkpoints, resume selection, verification, RNG capture.

The runner talks to one `Checkpointer` (manager.py): `find_resume()` before building, `load()` after the strategy
is set up, `save()` at step boundaries, `wait()` before exit. What a strategy writes into a folder (DCP shards, a
DeepSpeed engine's files) is the strategy's business (`Strategy.save_checkpoint/load_checkpoint`); everything
around it (layout, manifest with checksums, commit by rename, keep-N, fallback) lives here, identical for all.
"""

from dist_train.checkpoint.manager import Checkpointer
from dist_train.checkpoint.manifest import Manifest, model_signature

__all__ = ["Checkpointer", "Manifest", "model_signature"]
