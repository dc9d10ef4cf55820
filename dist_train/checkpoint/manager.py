"""The checkpoint folder of a run: save with an atomic commit, keep N, pick what to resume from, load.

Layout: <checkpoint.dir, default run_dir/checkpoints>/step_<N>/ holds what the strategy wrote (DCP shards and
`strategy_state.pt`, or a DeepSpeed engine's files), the trainer's state (`trainer_state.pt`,
dist_train.train_state.TrainState: written by rank 0, the same on every rank), one `rng_rank<R>.pt` per rank (its
random generators and the per-rank part of the trainer's state), and `checkpoint.json` (manifest.py).
Each rank hashes what it writes while writing it (hashing.py); rank 0 merges the digests into the manifest, writes
it, and commits: on a local or shared folder the save went into `.tmp-step_<N>/` and the rename to `step_<N>` is
the commit (atomic on POSIX file systems); on an object store the manifest, written last, is (storage.py). A crash
at any moment therefore leaves either the old set of complete checkpoints or the new one; leftover `.tmp-*`
folders are ignored and removed at the next start.

Durability is off the training thread. The commit does not wait for fsync: each rank then flushes its own files
in a background thread, and older checkpoints are pruned (keep-N) only at the next save or at the end of the run,
after every rank has confirmed that flush. A power loss right after a commit may thus leave the newest checkpoint
with missing bytes, but never without the intact previous one, and the checksums that every resume verifies
detect it (`resume: auto` falls back). A crash of the process alone loses nothing (the data is in the page cache).

All ranks must see the same folder (a shared file system on several nodes, or the same bucket), as DCP requires.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

from dist_train import distributed
from dist_train.checkpoint import rng, safe_load
from dist_train.checkpoint.hashing import SaveTarget, balanced_shares, digest_of, hash_stream
from dist_train.checkpoint.manifest import MANIFEST, Manifest, signature_diff
from dist_train.checkpoint.selection import choose
from dist_train.checkpoint.storage import Location, open_storage
from dist_train.cluster import DistEnv
from dist_train.config.schema import CheckpointConfig
from dist_train.errors import RunError, UsageError
from dist_train.train_state import TrainState

TMP_PREFIX = ".tmp-"
TRAINER_STATE = "trainer_state.pt"


def _failures() -> tuple[type[BaseException], ...]:
    """What a failed save raises: DCP gathers every rank's error into a CheckpointException, a BaseException
    subclass. Imported only when a save fails (`except` evaluates its expression only then): importing
    torch.distributed.checkpoint pulls in torch.distributed.tensor, ~0.5-1 s of start-up (bench/startup.py)."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)


class Checkpointer:
    def __init__(self, cfg: CheckpointConfig, root: Path, env: DistEnv):
        self.cfg, self.env = cfg, env
        self.storage = open_storage(cfg.dir if getattr(cfg, "dir", None) else Path(root))
        self.root = self.storage.root
        self._pending: tuple[Future, int, SaveTarget, Callable] | None = None  # an async save not yet committed
        self._committed = threading.Event()
        self._commit_error: str | None = None
        self._flushing: list[Future] = []  # this rank's fsyncs of its last saves' files, done in one thread
        self._flusher: ThreadPoolExecutor | None = None
        self._prune_due = False
        self.last_stall_s = 0.0  # how long the last save() held the training loop on this rank
        self.group = None
        if cfg.async_save and env.is_distributed:
            import torch.distributed as dist

            # DCP's background thread runs collectives of its own; on the training group they could interleave
            # with the loop's all-reduces, so async saves get a gloo group (DCP stages async saves on the CPU).
            self.group = dist.new_group(backend="gloo")

    # ---------------------------------------------------------------- resume

    def find_resume(self) -> Manifest | None:
        """The checkpoint to resume from, verified, the same on every rank; None to start fresh."""
        if self.env.is_main and self.cfg.resume == "auto" and self.storage.atomic_rename:
            self._remove_unfinished()
        return choose(self.cfg.resume, self.storage, self.env)

    def complete(self) -> list[Location]:
        """Committed checkpoint folders (those with a manifest), oldest first."""
        found = []
        for name in self.storage.names():
            suffix = name[len("step_"):]
            if name.startswith("step_") and suffix.isdigit():
                path = self.storage.child(name)
                if self.storage.exists(self.storage.join(path, MANIFEST)):
                    found.append((int(suffix), path))
        return [p for _, p in sorted(found)]

    def _remove_unfinished(self) -> None:
        for name in self.storage.names():
            if name.startswith(TMP_PREFIX):
                path = self.storage.child(name)
                print(f"checkpoint: removing unfinished save {path}", flush=True)
                self.storage.remove(path)

    def load(self, manifest: Manifest, strategy, state: TrainState, signature: dict[str, list[int]]) -> None:
        """Restore the strategy's state (model, optimizer, schedule, scaler), the trainer's state and, on the same
        world size, this rank's random generators and per-rank state."""
        path = manifest.path
        diff = signature_diff(manifest.model, signature)
        if diff:
            raise UsageError(
                f"checkpoint.resume: {path} holds another model (recipe {manifest.recipe}); {diff}. "
                "Resume it with the config it was trained with, or set checkpoint.resume=never"
            )
        try:
            strategy.load_checkpoint(path)
            missing = state.load_state_dict(self._read_torch(path, TRAINER_STATE))
            if missing:
                distributed.print0(f"checkpoint: {path} has no state for {', '.join(missing)} (switched on since it "
                                   "was saved); those start fresh")
            if manifest.world_size == self.env.world_size:
                saved = self._read_torch(path, f"rng_rank{self.env.rank}.pt")
                rng.restore(saved["rng"])
                state.load_local_state_dict(saved["local"])
            else:
                distributed.print0(
                    f"checkpoint: saved by {manifest.world_size} processes, resumed on {self.env.world_size}: the "
                    "random generators restart from the per-rank seeds (the data order does not depend on them)"
                )
        except safe_load.InvalidCheckpoint as e:  # changed since it was verified, or refused by a loader
            raise UsageError(f"checkpoint.resume: {path} cannot be loaded: {e}") from None
        distributed.print0(f"checkpoint: resumed from {path} (step {manifest.step})")

    def _read_torch(self, path: Location, name: str):
        return safe_load.torch_load(self.storage.read_bytes(self.storage.join(path, name)), name)

    # ---------------------------------------------------------------- save

    def save(self, step: int, strategy, state: TrainState, manifest: Manifest, blocking: bool = True,
             before_commit: Callable[[Location], None] = lambda directory: None,
             on_saved: Callable[[Location], None] = lambda path: None) -> None:
        """Save on every rank; returns once committed, or (async, not blocking) once the state is staged.
        `before_commit(tmp)`: every rank's files are written, nothing committed (blocking saves); `on_saved(path)`:
        committed, called on every rank (for async saves, from the `wait()` that finds the write finished)."""
        start = time.perf_counter()
        try:
            self._save(step, strategy, state, manifest, blocking, before_commit, on_saved)
        finally:
            self.last_stall_s = time.perf_counter() - start

    def _save(self, step, strategy, state, manifest, blocking, before_commit, on_saved) -> None:
        self.wait()  # commits happen in step order
        final = self.storage.child(f"step_{step}")
        location = self.storage.child(f"{TMP_PREFIX}step_{step}") if self.storage.atomic_rename else final
        target = SaveTarget(self.storage, location)
        failure = None
        try:
            if self.env.is_main:
                self.storage.remove(location, first=MANIFEST)
                self.storage.make_folder(location)
        except OSError as e:
            failure = e
        # Also a barrier (the folder exists before anyone writes into it), and it tells whether every rank's
        # earlier saves are flushed: only then may older checkpoints go.
        flushed = self._agree(failure, step, location, report_flushed=True)
        if self.env.is_main and self._prune_due and flushed:
            # Deleting a checkpoint is ~1-4 ms per file system walk: off the training thread, in the flush thread.
            # It only touches folders older than the `keep` newest committed ones, never the one being written.
            self._prune_due = False  # cleared here, not in the thread: a commit meanwhile may set it again
            self._flushing.append(self._flush_thread().submit(self._prune, True))
        target.put(f"rng_rank{self.env.rank}.pt", {"rng": rng.capture(), "local": state.local_state_dict()})
        if self.env.is_main:
            target.put(TRAINER_STATE, state.state_dict())
        background = self.cfg.async_save and not blocking
        try:
            if background:
                future = strategy.async_save_checkpoint(target, self.group)
            else:
                strategy.save_checkpoint(target)
            if target.writer is None:
                target.write_pending()  # no DCP writer wrote them: a strategy that writes its files itself
        except _failures() as e:
            failure = e
        self._agree(failure, step, location)
        if background and target.writer is not None:  # DCP writes on in its thread; the commit follows there
            self._committed.clear()
            self._commit_error = None
            future.add_done_callback(lambda f: self._finish_async(f, step, target, manifest))
            self._pending = (future, step, target, on_saved)
            return
        digests = target.merged if target.writer is not None else self._hash_shares(target, step)
        before_commit(location)
        try:
            if self.env.is_main:
                self._commit(step, target, manifest, digests)
        except OSError as e:
            failure = e
        self._agree(failure, step, location)
        self._flush_in_background(target, final)
        on_saved(final)

    def _hash_shares(self, target: SaveTarget, step: int) -> dict:
        """For a strategy that wrote its files itself: rank 0 lists the folder, each rank hashes its share."""
        listing: list[Any] = [None]
        if self.env.is_main:
            listing[0] = self.storage.files(target.location)
        if self.env.is_distributed:
            import torch.distributed as dist

            dist.broadcast_object_list(listing, src=0)
        mine = balanced_shares(listing[0], self.env.world_size)[self.env.rank]
        digests = {}
        for rel in mine:
            with self.storage.open(target.path(rel), "rb") as f:
                digests[rel] = hash_stream(f)
        target.local.update({rel: digests[rel] for rel in mine})
        gathered: list[Any] = [digests]
        if self.env.is_distributed:
            import torch.distributed as dist

            gathered = [None] * self.env.world_size
            dist.all_gather_object(gathered, digests)
        merged = {}
        for part in gathered:
            merged.update(part)
        return merged

    def flush(self) -> None:
        """Block until this rank's files of every save so far are durable (the background flush is done)."""
        self.wait()
        self._settle()

    def close(self) -> None:
        """The end of a run: the pending commit, every rank's files flushed, keep-N applied."""
        self.wait(prune=True)
        if self._flusher is not None:
            self._flusher.shutdown()
            self._flusher = None

    def wait(self, prune: bool = False) -> None:
        """Block until a pending async save is committed (every rank); raise if it failed anywhere. With `prune`
        (close()), also wait for every rank's flush and apply keep-N."""
        if self._pending is not None:
            future, step, target, on_saved = self._pending
            self._pending = None
            failure = None
            try:
                future.result()
            except _failures() as e:
                failure = e
            self._committed.wait()
            if self._commit_error and failure is None:
                failure = OSError(self._commit_error)
            self._agree(failure, step, target.location)
            on_saved(self.storage.child(f"step_{step}"))
        if prune:
            self._settle()
            distributed.barrier()  # every rank's files are flushed
            if self.env.is_main and self._prune_due:
                self._prune_due = False
                self._prune()

    def _finish_async(self, future: Future, step: int, target: SaveTarget, manifest: Manifest) -> None:
        # Runs in DCP's writer thread once every rank's shards are written: no collectives here.
        try:
            if future.exception() is None:
                if self.env.is_main:
                    self._commit(step, target, manifest, target.merged)
                self._flush(target, self.storage.child(f"step_{step}"))
        except Exception as e:  # noqa: BLE001 - reported by wait() on the main thread
            self._commit_error = f"{type(e).__name__}: {e}"
        finally:
            self._committed.set()

    def _commit(self, step: int, target: SaveTarget, manifest: Manifest, digests: dict) -> None:
        manifest.step = step
        manifest.files = dict(sorted(digests.items()))
        data = manifest.to_json()
        self.storage.write_bytes(target.path(MANIFEST), data)
        final = self.storage.child(f"step_{step}")
        if self.storage.atomic_rename:
            old = self.storage.child(f"{TMP_PREFIX}old-step_{step}")
            if self.storage.exists(final):  # a damaged checkpoint of the same step that a fallback resume trained past
                self.storage.rename(final, old)
            self.storage.rename(target.location, final)
            self.storage.remove(old)
        target.local[MANIFEST] = digest_of(data)
        self._prune_due = True  # rank 0 only: applied once every rank has flushed (next save, or close)

    def _flush_thread(self) -> ThreadPoolExecutor:
        if self._flusher is None:  # one thread for the run: starting one per save cost ~0.5-4 ms of the stall
            self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dist_train checkpoint flush")
        return self._flusher

    def _flush_in_background(self, target: SaveTarget, final: Location) -> None:
        self._flushing.append(self._flush_thread().submit(self._flush, target, final))

    def _flush(self, target: SaveTarget, final: Location) -> None:
        if not self.storage.atomic_rename:
            return  # an object is durable once its PUT returns
        files = [self.storage.join(final, rel) for rel in target.local if rel != MANIFEST or self.env.is_main]
        try:
            self.storage.make_durable(files + ([final, self.root] if self.env.is_main else []))
        except FileNotFoundError:
            pass  # pruned meanwhile (keep-N of another save); nothing left to make durable
        except OSError as e:
            print(f"checkpoint: flushing {final} to disk failed ({e.strerror or e}); it may not survive a power "
                  "loss (its checksums will tell at resume)", flush=True)

    def _settle(self) -> None:
        while self._flushing:
            self._flushing.pop().result()

    def _prune(self, in_background: bool = False) -> None:
        """keep-N: delete the oldest committed checkpoints. The caller clears `_prune_due`."""
        if self.cfg.keep is None:
            return
        complete = self.complete()
        for path in complete[: max(0, len(complete) - self.cfg.keep)]:
            try:
                self.storage.remove(path, first=MANIFEST)  # manifest first: never a half-deleted "checkpoint"
            except OSError as e:
                if not in_background:
                    raise
                # Nothing lost: the folder has no manifest or is whole; the next prune tries again.
                self._prune_due = True
                print(f"checkpoint: removing {path} (checkpoint.keep={self.cfg.keep}) failed: "
                      f"{e.strerror or e}; it is tried again at the next save", flush=True)

    def _agree(self, failure: BaseException | None, step: int, location: Location,
               report_flushed: bool = False) -> bool:
        """Every rank learns whether any rank failed (one tiny all-reduce), so all raise together instead of some
        waiting forever in the next collective. The unfinished folder is removed; committed ones are untouched.
        With `report_flushed` the same all-reduce says whether every rank's earlier saves are flushed (returned)."""
        self._flushing = [f for f in self._flushing if not f.done()]
        flags = torch.tensor([failure is not None, report_flushed and bool(self._flushing)], dtype=torch.float32,
                             device=_device())
        failed, unflushed = (bool(x) for x in distributed.all_reduce_(flags, torch.distributed.ReduceOp.MAX).tolist())
        if not failed:
            return not unflushed
        if self.env.is_main:
            self.storage.remove(location, first=MANIFEST)
        previous = self.complete()
        kept = f"the last complete checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        reason = _reason(failure) if failure is not None else "another rank failed"
        raise RunError(f"checkpoint: saving step {step} into {self.root} failed: {reason}; {kept}")


def _device() -> torch.device:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reason(e: BaseException) -> str:
    """The innermost OS error (DCP wraps each rank's exception) as 'No space left on device', else the exception."""
    seen, stack = set(), [e]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return f"{cur.strerror}" + (f" ({cur.filename})" if cur.filename else "")
        stack.extend(x for x in (cur.__cause__, cur.__context__) if x is not None)
        if isinstance(cur, _failures()[1]):  # CheckpointException: rank -> (exception, traceback)
            for failure in cur.failures.values():
                stack.extend(x for x in (failure if isinstance(failure, tuple) else (failure,))
                             if isinstance(x, BaseException))
    return f"{type(e).__name__}: {e}"
