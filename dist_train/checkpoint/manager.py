"""The checkpoint folder of a run: save with an atomic commit, keep N, pick what to resume from, load.

Layout: run_dir/checkpoints/step_<N>/ holds what the strategy wrote (DCP shards and `strategy_state.pt`, or a
DeepSpeed engine's files), the trainer's state (`trainer_state.pt`, dist_train.train_state.TrainState: written by
rank 0, the same on every rank), one `rng_rank<R>.pt` per rank (its random generators and the per-rank part of the
trainer's state), and `checkpoint.json` (manifest.py).
A save writes into `.tmp-step_<N>/`; once every rank's files are on disk, rank 0 checksums them, writes the
manifest and renames the folder to `step_<N>` (a rename is atomic on POSIX file systems). A crash at any moment
therefore leaves either the old set of complete checkpoints or the new one; leftover `.tmp-*` folders are ignored
and removed at the next start. Older checkpoints are pruned only after the new one is committed.

All ranks must see the same folder (a shared file system on several nodes), as DCP itself requires.
"""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import torch

from dist_train import distributed
from dist_train.checkpoint import rng
from dist_train.checkpoint.manifest import InvalidCheckpoint, Manifest, describe_files, signature_diff, verify
from dist_train.cluster import DistEnv
from dist_train.config.schema import CheckpointConfig
from dist_train.errors import RunError, UsageError
from dist_train.train_state import TrainState

TMP_PREFIX = ".tmp-"
TRAINER_STATE = "trainer_state.pt"


def _failures() -> tuple[type[BaseException], ...]:
    """What a failed save raises: DCP gathers every rank's error into a CheckpointException, a BaseException
    subclass. Imported only when a save fails (`except` evaluates its expression only then): importing
    torch.distributed.checkpoint pulls in torch.distributed.tensor, a large share of start-up (bench/startup.py)."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)


class Checkpointer:
    def __init__(self, cfg: CheckpointConfig, root: Path, env: DistEnv):
        self.cfg, self.root, self.env = cfg, Path(root), env
        self._pending: tuple[Future, int, Path, Callable] | None = None  # an async save not yet committed
        self._committed = threading.Event()
        self._commit_error: str | None = None
        self.group = None
        if cfg.async_save and env.is_distributed:
            import torch.distributed as dist

            # DCP's background thread runs collectives of its own; on the training group they could interleave
            # with the loop's all-reduces, so async saves get a gloo group (DCP stages async saves on the CPU).
            self.group = dist.new_group(backend="gloo")

    # ---------------------------------------------------------------- resume

    def find_resume(self) -> Manifest | None:
        """The checkpoint to resume from, the same on every rank; None to start fresh. Rank 0 decides (it also
        removes unfinished saves) and tells the others."""
        choice: list[Any] = [None]
        if self.env.is_main:
            try:
                choice[0] = ("ok", self._choose())
            except UsageError as e:
                choice[0] = ("error", str(e))
        if self.env.is_distributed:
            import torch.distributed as dist

            dist.broadcast_object_list(choice, src=0)
        status, value = choice[0]
        if status == "error":
            raise UsageError(value)
        return value

    def _choose(self) -> Manifest | None:
        mode = self.cfg.resume
        if mode == "never":
            return None
        if mode != "auto":
            path = Path(mode)
            hint = "give auto, never or the path of a checkpoint folder (run_dir/checkpoints/step_<N>)"
            if not path.exists():
                raise UsageError(f"checkpoint.resume: '{mode}' does not exist; {hint}")
            if not path.is_dir():
                raise UsageError(f"checkpoint.resume: '{mode}' is not a checkpoint folder; {hint}")
            try:
                return _with_path(verify(path), path)
            except InvalidCheckpoint as e:
                raise UsageError(f"checkpoint.resume: '{mode}' is not a usable checkpoint: {e}; {hint}") from None
        self._remove_unfinished()
        candidates = self.complete()
        for path in reversed(candidates):
            try:
                return _with_path(verify(path), path)
            except InvalidCheckpoint as e:
                print(f"checkpoint: {path} is damaged ({e}); falling back to the previous one", flush=True)
        if candidates:
            raise UsageError(
                f"checkpoint.resume=auto: none of the {len(candidates)} checkpoints in {self.root} is intact; move "
                "them away, or set checkpoint.resume=never to start over"
            )
        return None

    def complete(self) -> list[Path]:
        """Committed checkpoint folders, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.glob("step_*"):
            suffix = p.name[len("step_"):]
            if p.is_dir() and suffix.isdigit() and (p / "checkpoint.json").is_file():
                found.append((int(suffix), p))
        return [p for _, p in sorted(found)]

    def _remove_unfinished(self) -> None:
        if self.root.is_dir():
            for p in self.root.glob(TMP_PREFIX + "*"):
                print(f"checkpoint: removing unfinished save {p}", flush=True)
                shutil.rmtree(p, ignore_errors=True)

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
        strategy.load_checkpoint(path)
        missing = state.load_state_dict(torch.load(path / TRAINER_STATE, weights_only=True, map_location="cpu"))
        if missing:
            distributed.print0(f"checkpoint: {path} has no state for {', '.join(missing)} (switched on since it was "
                               "saved); those start fresh")
        if manifest.world_size == self.env.world_size:
            saved = torch.load(path / f"rng_rank{self.env.rank}.pt", weights_only=True)
            rng.restore(saved["rng"])
            state.load_local_state_dict(saved["local"])
        else:
            distributed.print0(
                f"checkpoint: saved by {manifest.world_size} processes, resumed on {self.env.world_size}: the random "
                "generators restart from the per-rank seeds (the data order does not depend on them)"
            )
        distributed.print0(f"checkpoint: resumed from {path} (step {manifest.step})")

    # ---------------------------------------------------------------- save

    def save(self, step: int, strategy, state: TrainState, manifest: Manifest, blocking: bool = True,
             before_commit: Callable[[Path], None] = lambda directory: None,
             on_saved: Callable[[Path], None] = lambda path: None) -> None:
        """Save on every rank; returns once committed, or (async, not blocking) once the state is staged.
        `before_commit(tmp)`: every rank's files are written, nothing committed (blocking saves); `on_saved(path)`:
        committed, called on every rank (for async saves, from the `wait()` that finds the write finished)."""
        self.wait()  # commits happen in step order
        tmp = self.root / f"{TMP_PREFIX}step_{step}"
        failure = None
        try:
            if self.env.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
        except OSError as e:
            failure = e
        self._agree(failure, step, tmp)  # also a barrier: the folder exists before anyone writes into it
        try:
            torch.save({"rng": rng.capture(), "local": state.local_state_dict()}, tmp / f"rng_rank{self.env.rank}.pt")
            if self.env.is_main:
                torch.save(state.state_dict(), tmp / TRAINER_STATE)
        except OSError as e:
            failure = e
        self._agree(failure, step, tmp)
        if self.cfg.async_save and not blocking:
            try:
                future = strategy.async_save_checkpoint(tmp, self.group)
            except _failures() as e:
                failure = e
            self._agree(failure, step, tmp)
            self._committed.clear()
            self._commit_error = None
            if self.env.is_main:
                future.add_done_callback(lambda f: self._finish_async(f, step, tmp, manifest))
            self._pending = (future, step, tmp, on_saved)
            return
        try:
            strategy.save_checkpoint(tmp)
        except _failures() as e:
            failure = e
        self._agree(failure, step, tmp)
        before_commit(tmp)
        try:
            if self.env.is_main:
                self._commit(step, tmp, manifest)
        except OSError as e:
            failure = e
        self._agree(failure, step, tmp)
        on_saved(self.root / f"step_{step}")

    def wait(self) -> None:
        """Block until a pending async save is committed (every rank); raise if it failed anywhere."""
        if self._pending is None:
            return
        future, step, tmp, on_saved = self._pending
        self._pending = None
        failure = None
        try:
            future.result()
        except _failures() as e:
            failure = e
        if self.env.is_main:
            self._committed.wait()
            if self._commit_error and failure is None:
                failure = OSError(self._commit_error)
        self._agree(failure, step, tmp)
        on_saved(self.root / f"step_{step}")

    def _finish_async(self, future: Future, step: int, tmp: Path, manifest: Manifest) -> None:
        # Runs in DCP's writer thread on rank 0 once every rank's shards are written: no collectives here.
        try:
            if future.exception() is None:
                self._commit(step, tmp, manifest)
        except Exception as e:  # noqa: BLE001 - reported by wait() on the main thread
            self._commit_error = f"{type(e).__name__}: {e}"
        finally:
            self._committed.set()

    def _commit(self, step: int, tmp: Path, manifest: Manifest) -> None:
        manifest.step = step
        manifest.files = describe_files(tmp)
        manifest.write(tmp)
        final = self.root / f"step_{step}"
        old = self.root / f"{TMP_PREFIX}old-step_{step}"
        if final.exists():  # a damaged checkpoint of the same step that a fallback resume trained past
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        shutil.rmtree(old, ignore_errors=True)
        self._prune(keep_also=final)

    def _prune(self, keep_also: Path) -> None:
        if self.cfg.keep is None:
            return
        complete = self.complete()
        for path in complete[: max(0, len(complete) - self.cfg.keep)]:
            if path != keep_also:
                shutil.rmtree(path, ignore_errors=True)

    def _agree(self, failure: BaseException | None, step: int, tmp: Path) -> None:
        """Every rank learns whether any rank failed (one tiny all-reduce), so all raise together instead of some
        waiting forever in the next collective. The unfinished folder is removed; committed ones are untouched."""
        if not distributed.any_across_ranks(failure is not None, _device()):
            return
        if self.env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
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


def _with_path(manifest: Manifest, path: Path) -> Manifest:
    manifest.path = path
    return manifest


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
