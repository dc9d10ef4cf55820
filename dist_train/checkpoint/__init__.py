"""Checkpoints: atomic step_<N> folders (local, shared or on an object store), resume selection, verification.

The runner talks to one `Checkpointer` (manager.py): `find_resume()` before building, `load()` after the strategy
is set up, `save()` at step boundaries, `close()` before exit. What a strategy writes into a folder (DCP shards, a
DeepSpeed engine's files) is the strategy's business (`Strategy.save_checkpoint/load_checkpoint`), through a
`SaveTarget` that hashes what each rank writes (hashing.py) and readers that never run code a checkpoint holds
(safe_load.py); everything around it (storage, manifest with checksums, commit, keep-N, verification and fallback)
lives here, identical for all. Outside training, offline.py opens a checkpoint for export and evaluation.
"""

from dist_train.checkpoint.manager import Checkpointer
from dist_train.checkpoint.manifest import Manifest, model_signature

__all__ = ["Checkpointer", "Manifest", "model_signature"]
