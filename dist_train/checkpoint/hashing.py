"""Size and SHA-256 of every checkpoint file, computed by the rank that writes it, while it writes it.

No rank re-reads what another rank wrote: `SaveTarget` is one rank's side of a save. Its own small files
(`put`: rng_rank<R>.pt, trainer_state.pt) are hashed from the bytes being written, and `dcp_writer()` is DCP's
FileSystemWriter (or FsspecWriter for an object store) with its file system wrapped so that every stream it writes
is hashed on the way (in DCP's background thread for an async save). Each rank's digests travel to the coordinator
inside DCP's own gather of write results, one extra entry per rank, taken out again before DCP writes `.metadata`
(so the metadata DCP and other tools read is exactly DCP's); rank 0 then only merges them into the manifest.
For a strategy that writes its files itself (DeepSpeed), `balanced_shares` splits the folder's files between ranks
by size and each rank hashes its share right after the save, in parallel. At resume the same split decides which
rank verifies which file (integrity.py).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch
import torch.utils.serialization.config as serialization_config

from dist_train.checkpoint.storage import Location, Storage, is_url

Digest = dict[str, Any]  # {"size": bytes, "sha256": hex}
_DIGESTS = "__dist_train_file_digests__"  # the extra write result that carries one rank's digests
CHUNK = 1 << 22


def digest_of(data) -> Digest:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def hash_stream(stream) -> Digest:
    h, size = hashlib.sha256(), 0
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        h.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


OVERLAP = 1 << 20  # writes from this size on are hashed in another thread while they are written


@functools.cache
def _hasher() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="dist_train checkpoint hash")


class HashingStream:
    """A write stream that hashes what passes through. DCP flushes and "closes" it after every tensor; both are
    deferred to the real file's close (for small tensors a system call each, for an object store a request).
    A large write (a tensor's bytes, torch.save hands them over in one piece) is hashed in a helper thread while
    the calling thread writes it: both release the GIL, so SHA-256 (~1.5 GB/s, as slow as the write itself on a
    page cache) costs no extra time where a second core is free. The write returns only once both are done, so
    the caller may reuse its buffer at once, and the digest is always that of the bytes in order."""

    def __init__(self, raw):
        self.raw, self.hash, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size >= OVERLAP:
            hashed = _hasher().submit(self.hash.update, data)
            try:
                n = self.raw.write(data)
            finally:
                hashed.result()
        else:
            self.hash.update(data)
            n = self.raw.write(data)
        self.size += size
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        self.raw.flush()  # whoever asks for the descriptor (to fsync it) must find every byte written
        return self.raw.fileno()

    def digest(self) -> Digest:
        return {"size": self.size, "sha256": self.hash.hexdigest()}


class HashingFileSystem:
    """DCP's file system with every written stream hashed into `digests` (keyed by path relative to `root`)."""

    def __init__(self, inner, root: Location, digests: dict[str, Digest]):
        self.inner, self.root, self.digests = inner, str(root).rstrip("/") + "/", digests

    def _rel(self, path) -> str:
        path = os.fspath(path)
        return path[len(self.root):] if path.startswith(self.root) else os.path.basename(path)

    @contextmanager
    def create_stream(self, path, mode: str):
        with self.inner.create_stream(path, mode) as raw:
            if "w" not in mode:
                yield raw
                return
            stream = HashingStream(raw)
            yield stream
            self.digests[self._rel(path)] = stream.digest()

    def rename(self, path, new_path) -> None:
        self.inner.rename(path, new_path)
        moved = self.digests.pop(self._rel(path), None)
        if moved is not None:
            self.digests[self._rel(new_path)] = moved

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _ItemBuffer(io.BytesIO):
    """One small item, serialized in memory and handed to the file in one write when DCP closes it (torch.save
    makes ~25 small writes per tensor; through Python file objects each costs more than the bytes)."""

    def __init__(self, raw):
        super().__init__()
        self.raw = raw

    def close(self) -> None:
        if not self.closed:
            self.raw.write(self.getbuffer())
        super().close()


class _PlainTransforms:
    """DCP's stream transforms when there are none (dist_train uses none). DCP's own version defines a wrapper
    class for every tensor it writes (~0.3 ms each); here small items go through an _ItemBuffer, large ones straight
    into the hashing stream."""

    extensions = ()
    SMALL = 1 << 20

    def transform_save_stream(self, write_item, raw_stream):
        data = getattr(write_item, "tensor_data", None)
        if data is None or _nbytes(data) < self.SMALL:
            return _ItemBuffer(raw_stream), []
        return raw_stream, []


def _nbytes(tensor_data) -> int:
    n = tensor_data.properties.dtype.itemsize
    for d in tensor_data.size:
        n *= d
    return n


class _HashingWriter:
    """Mixed into DCP's FileSystemWriter/FsspecWriter."""

    def _hash_into(self, target: SaveTarget) -> None:
        self.target = target
        self.local_digests = target.local  # what this rank wrote (its `put` files too)
        self.digests: dict[str, Digest] | None = None  # on the coordinator after finish: every rank's files
        self.fs = HashingFileSystem(self.fs, self.path, target.local)
        if not getattr(self.transforms, "extensions", None):
            self.transforms = _PlainTransforms()

    def write_data(self, plan, planner):
        from torch.distributed.checkpoint.metadata import MetadataIndex
        from torch.distributed.checkpoint.storage import WriteResult
        from torch.futures import Future

        self.target.write_pending()  # this rank's small files, here so that an async save writes them in its thread
        # No CRC-32 inside each tensor's zip record: every file's SHA-256 is in the manifest and checked at resume,
        # and the CRC cost ~30 ms per 120 MB on this thread (bench/checkpoint.py). torch.load reads such records
        # as it reads any. The switch is torch's one global, so a torch.save elsewhere meanwhile skips it too.
        with serialization_config.patch({"save.compute_crc32": False}):
            results = super().write_data(plan, planner).value()
        done: Future = Future()
        done.set_result([*results, WriteResult(MetadataIndex(_DIGESTS), 0, dict(self.local_digests))])
        return done

    def finish(self, metadata, results) -> None:
        merged: dict[str, Digest] = {}
        own = []
        for rank_results in results:
            own.append([r for r in rank_results if r.index.fqn != _DIGESTS])
            for r in rank_results:
                if r.index.fqn == _DIGESTS:
                    merged.update(r.storage_data)
        super().finish(metadata, own)
        merged.update(self.local_digests)  # .metadata, written just now
        self.digests = merged


@functools.cache
def _planner_class():
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from torch.distributed.checkpoint.planner import WriteItemType

    class SmallObjectPlanner(DefaultSavePlanner):
        """DCP's default save planner, with each non-tensor entry (an optimizer group's lr, betas, flags: ~15 per
        group) serialized by torch.save's non-zip format: ~35 µs against ~150 µs each for a zip archive around
        a float. Every torch.load reads both (DCP's loaders and dist_train's weights-only one included)."""

        def transform_object(self, write_item, object):
            if write_item.type == WriteItemType.BYTE_IO:
                buffer = io.BytesIO()
                torch.save(object, buffer, _use_new_zipfile_serialization=False)
                return buffer
            return object

    return SmallObjectPlanner


@functools.cache
def _writer_class(remote: bool):
    if remote:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter as base
    else:
        from torch.distributed.checkpoint import FileSystemWriter as base
    return type(f"Hashing{base.__name__}", (_HashingWriter, base), {})


class SaveTarget:
    """One rank's side of one save into `location`: what it wrote there, with sizes and checksums."""

    def __init__(self, storage: Storage, location: Location):
        self.storage, self.location = storage, location
        self.local: dict[str, Digest] = {}
        self.pending: list[tuple[str, memoryview]] = []
        self.writer = None

    def path(self, rel: str) -> Location:
        return self.storage.join(self.location, rel)

    def put(self, rel: str, obj) -> None:
        """torch.save `obj` as `rel` (serialized now, so later changes to `obj` do not matter), hashed from the
        bytes written. Written by the DCP writer if one is used (in its background thread when async), else by
        `write_pending()`."""
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        self.pending.append((rel, buffer.getbuffer()))

    def write_pending(self) -> None:
        while self.pending:
            rel, data = self.pending.pop(0)
            self.storage.write_bytes(self.path(rel), data)
            self.local[rel] = digest_of(data)

    def dcp_writer(self):
        """DCP's storage writer for this folder, hashing as it writes. No fsync here: the checkpointer makes the
        files durable after the commit, off the training thread (manager.py says why that is safe)."""
        self.writer = _writer_class(is_url(self.location))(self.location, sync_files=False)
        self.writer._hash_into(self)
        return self.writer

    def dcp_planner(self):
        """DCP's save planner for this save (its default, with faster small entries)."""
        return _planner_class()()

    @property
    def merged(self) -> dict[str, Digest] | None:
        """On the coordinator, after a DCP save: every rank's files. None when no DCP writer was used."""
        return None if self.writer is None else self.writer.digests


def balanced_shares(sizes: dict[str, int], world_size: int) -> list[list[str]]:
    """The files split into `world_size` lists of about equal bytes (largest first to the lightest), the same
    on every rank for the same input."""
    shares: list[list[str]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for rel in sorted(sizes, key=lambda r: (-sizes[r], r)):
        i = min(range(world_size), key=lambda k: (load[k], k))
        shares[i].append(rel)
        load[i] += sizes[rel]
    return shares
