"""Which checkpoint a run resumes from (`checkpoint.resume`), decided together by every rank.

`auto` walks the committed checkpoints newest first: rank 0 reads and validates the manifest and tells the others,
then every rank verifies its share of the files (integrity.py) and all learn the first error any rank found. A
damaged one is reported and the previous one is tried; a folder without a manifest (a deleted manifest, or on an
object store an unfinished save) is reported as skipped. An explicit path gets the same checks and, if it fails
them, one line and exit code 2. No rank reads more than its share of the bytes.
"""

from __future__ import annotations

from typing import Any

from dist_train import distributed
from dist_train.checkpoint.integrity import folder_step, read_manifest, share, verify_files
from dist_train.checkpoint.manifest import MANIFEST, InvalidCheckpoint, Manifest
from dist_train.checkpoint.storage import Storage, open_storage
from dist_train.cluster import DistEnv
from dist_train.errors import UsageError

HINT = "give auto, never or the path of a checkpoint folder (run_dir/checkpoints/step_<N>)"


def choose(mode: str, storage: Storage, env: DistEnv) -> Manifest | None:
    if mode == "never":
        return None
    explicit = mode != "auto"
    candidates: list[Any] = [None]
    if env.is_main:
        try:
            candidates[0] = ("ok", _explicit(mode) if explicit else _committed(storage))
        except UsageError as e:
            candidates[0] = ("error", str(e))
        except Exception as e:  # noqa: BLE001 - a bucket that does not exist, no credentials, no permission
            where = mode if explicit else storage.root
            candidates[0] = ("error", f"checkpoint: cannot read '{where}': {type(e).__name__}: {_short(e)}")
    _broadcast(candidates, env)
    status, found = candidates[0]
    if status == "error":
        raise UsageError(found)
    damaged = 0
    for location in found:
        where = open_storage(location) if explicit else storage
        error = _check(where, location, env)
        if isinstance(error, Manifest):
            return error
        if explicit:
            raise UsageError(f"checkpoint.resume: '{mode}' is not a usable checkpoint: {error}; {HINT}")
        damaged += 1
        distributed.print0(f"checkpoint: {location} is damaged ({error}); falling back to the previous one")
    if damaged:
        raise UsageError(
            f"checkpoint.resume=auto: none of the {damaged} checkpoints in {storage.root} is intact; move them "
            "away, or set checkpoint.resume=never to start over"
        )
    return None


def _explicit(mode: str) -> list:
    where = open_storage(mode, key="checkpoint.resume")
    if not where.exists(mode):
        raise UsageError(f"checkpoint.resume: '{mode}' does not exist; {HINT}")
    if not where.atomic_rename:
        return [mode.rstrip("/")]
    from pathlib import Path

    if not Path(mode).is_dir():
        raise UsageError(f"checkpoint.resume: '{mode}' is not a checkpoint folder; {HINT}")
    return [Path(mode)]


def _committed(storage: Storage) -> list:
    """step_<N> folders newest first; those without a manifest are reported and left out."""
    steps = []
    for name in storage.names():
        location = storage.child(name)
        step = folder_step(location)
        if step is None:
            continue
        if storage.exists(storage.join(location, MANIFEST)):
            steps.append((step, location))
        else:
            print(f"checkpoint: skipping {location}: no {MANIFEST} (its manifest was deleted, or the save never "
                  "finished)", flush=True)
    return [location for _, location in sorted(steps, reverse=True)]


def _check(storage: Storage, location, env: DistEnv):
    """The verified manifest, or the first error (a string), the same on every rank."""
    box: list[Any] = [None]
    if env.is_main:
        try:
            box[0] = read_manifest(storage, location)
        except InvalidCheckpoint as e:
            box[0] = str(e)
    _broadcast(box, env)
    manifest = box[0]
    if isinstance(manifest, str):
        return manifest
    mine = None
    try:
        verify_files(storage, location, manifest, share(manifest, env.rank, env.world_size))
    except InvalidCheckpoint as e:
        mine = str(e)
    errors = [mine]
    if env.is_distributed:
        import torch.distributed as dist

        errors = [None] * env.world_size
        dist.all_gather_object(errors, mine)
    first = next((e for e in errors if e is not None), None)
    return manifest if first is None else first


def _short(e: Exception, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _broadcast(box: list, env: DistEnv) -> None:
    if env.is_distributed:
        import torch.distributed as dist

        dist.broadcast_object_list(box, src=0)
