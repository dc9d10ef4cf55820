"""Is this checkpoint intact and safe to load? Reading and checking a folder before anything of it is used.

`read_manifest` parses and validates checkpoint.json (manifest.py) and checks that its step is the folder's own
(`step_<N>`): the step printed and resumed from is the folder's, never an unchecked field. `verify_files` checks
a list of files against the manifest (present, same size, same SHA-256) and reads each pickled one the way it will
be loaded (`.metadata` with the restricted unpickler, `.pt` with `torch.load(weights_only=True)`), so that a
payload is refused here, where `resume: auto` can still fall back, and not half way through a load. Under several
processes each rank verifies one share of the files (`hashing.balanced_shares`); `verify` does all of them in
one process (export, evaluate, tests).
"""

from __future__ import annotations

import re
from pathlib import Path

from dist_train.checkpoint import safe_load
from dist_train.checkpoint.hashing import CHUNK, balanced_shares
from dist_train.checkpoint.manifest import MANIFEST, MAX_BYTES, InvalidCheckpoint, Manifest
from dist_train.checkpoint.storage import Location, Storage, open_storage

STEP_FOLDER = re.compile(r"step_(\d+)")
PROBE_LIMIT = 1 << 30  # pickled files of an object store are read into memory to be probed; ours are small


def folder_step(location: Location) -> int | None:
    match = STEP_FOLDER.fullmatch(str(location).rstrip("/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def read_manifest(storage: Storage, location: Location) -> Manifest:
    path = storage.join(location, MANIFEST)
    if not storage.exists(path):
        raise InvalidCheckpoint(f"no {MANIFEST} (an unfinished save, a deleted manifest, or not a checkpoint folder)")
    try:
        with storage.open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise InvalidCheckpoint(f"{MANIFEST} cannot be read ({e.strerror or e})") from None
    manifest = Manifest.from_json(data)
    step = folder_step(location)
    if step is not None and manifest.step != step:
        raise InvalidCheckpoint(f"{MANIFEST} says step {manifest.step} in folder step_{step}")
    manifest.path = location
    return manifest


def verify_files(storage: Storage, location: Location, manifest: Manifest, rels: list[str]) -> None:
    """InvalidCheckpoint (or UnsafeCheckpoint) naming the first of `rels` that is missing, altered or refused."""
    deepspeed = manifest.strategy == "deepspeed"
    for rel in rels:
        expected = manifest.files[rel]
        path = storage.join(location, rel)
        probe = rel.endswith(".pt") or rel == safe_load.METADATA
        keep = probe and (rel == safe_load.METADATA or not isinstance(path, Path)) and expected["size"] <= PROBE_LIMIT
        try:
            size = storage.size(path)
            if size is None:  # e.g. a link to /dev/zero, which would be read forever
                raise InvalidCheckpoint(f"file {rel} is not a regular file")
            if size != expected["size"]:
                raise InvalidCheckpoint(
                    f"file {rel} has {size} bytes, the manifest says {expected['size']} (truncated?)")
            size, sha256, data = _read(storage, path, keep, limit=expected["size"] + 1)
        except FileNotFoundError:
            raise InvalidCheckpoint(f"file {rel} is missing") from None
        except OSError as e:
            raise InvalidCheckpoint(f"file {rel} cannot be read ({e.strerror or e})") from None
        if size != expected["size"]:
            raise InvalidCheckpoint(f"file {rel} changed size while it was read")
        if sha256 != expected["sha256"]:
            raise InvalidCheckpoint(f"file {rel} does not match its SHA-256 checksum (altered or corrupted)")
        if rel == safe_load.METADATA:
            metadata = safe_load.read_metadata(data, rel)
            unknown = sorted({i.relative_path for i in metadata.storage_data.values()} - set(manifest.files))
            if unknown:
                raise InvalidCheckpoint(f"file {rel} refers to {unknown[0]}, which the manifest does not list")
        elif probe:
            allow = safe_load.deepspeed_classes() if deepspeed and rel.startswith("deepspeed/") else ()
            # Local files are memory-mapped: only the pickle is parsed, tensor bytes are not read again.
            safe_load.torch_load(path if data is None else data, rel, mmap=data is None, allow=allow)


def _read(storage: Storage, path: Location, keep: bool, limit: int):
    import hashlib

    h, size, kept = hashlib.sha256(), 0, []
    with storage.open(path, "rb") as f:
        while size < limit:
            chunk = f.read(min(CHUNK, limit - size))
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
            if keep:
                kept.append(chunk)
    return size, h.hexdigest(), b"".join(kept) if keep else None


def share(manifest: Manifest, rank: int, world_size: int) -> list[str]:
    sizes = {rel: entry["size"] for rel, entry in manifest.files.items()}
    return balanced_shares(sizes, world_size)[rank]


def verify(location: Location, storage: Storage | None = None) -> Manifest:
    """The validated manifest of an intact checkpoint, every file checked in this process; InvalidCheckpoint
    otherwise."""
    if storage is None:
        storage = open_storage(location)
    manifest = read_manifest(storage, location)
    verify_files(storage, location, manifest, list(manifest.files))
    return manifest
