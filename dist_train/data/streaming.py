"""Streaming (iterable) sources: a list of shards, each read from a sample offset, resumable mid-shard.

The contract (docs/data.md):
- A source subclasses `ShardedStream` and implements `shards()` (stable names, the same on every rank) and
  `read(shard, start)` (the samples of one shard from sample `start` on). `TokenShardStream` and `JsonlStream`
  are two.
- Epoch e orders the shards with the keyed bijection of dist_train.data.order (stream SHARDS) and deals them
  round-robin to the world_size x num_workers reading slots, slot = rank * num_workers + worker: the shard at
  position j of the epoch's order goes to slot j mod slots. Each slot reads its shards in that order, and each
  rank's DataLoader interleaves its workers' batches (torch's in-order round-robin).
- Every rank takes grad_accum batches per step; one all-reduce per step tells whether every rank got all of them.
  When some rank's shards run out, all ranks end the epoch at that same step (the partial step is dropped), so no
  rank ever waits in a collective another rank has left. Epochs with uneven shards therefore drop the tail of the
  ranks that had more data.
- The position of every (rank, worker) is checkpointed: torchdata's StatefulDataLoader state per rank (exact
  resume on the same world size and num_workers: the same batches in the same order), and the shard-offset
  progress of the epoch, all ranks merged (world-size independent). On another world size or worker count the
  epoch goes on from the merged progress: the shards not finished, each from its offset, dealt to the new slots;
  no sample is repeated or skipped at that granularity, though the order of the rest of the epoch differs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dist_train import distributed
from dist_train.data.layout import BatchLayout
from dist_train.data.order import SHARDS, EpochOrder
from dist_train.errors import RunError, UsageError

DONE = -1  # progress of a shard read to its end


def shard_plan(num_shards: int, seed: int, epoch: int, slot: int, slots: int) -> list[int]:
    """Indices (into shards()) that reading slot `slot` of `slots` reads in epoch `epoch`, in order."""
    order = EpochOrder(num_shards, seed, epoch, SHARDS)
    return order[slot::slots].tolist() if slot < num_shards else []


class ShardedStream(IterableDataset):
    """Subclass: implement `shards()` and `read(shard, start)`. Samples are whatever `read` yields (a tuple of
    tensors, a dict...); the DataLoader collates `batch_size` of them per micro-batch."""

    def shards(self) -> Sequence[str]:
        raise NotImplementedError

    def read(self, shard: str, start: int) -> Iterator[Any]:
        """The samples of `shard` from sample index `start` (0-based) on."""
        raise NotImplementedError

    # ------------------------------------------------------------ set by StreamLoader, state in each worker

    def assign(self, rank: int, world_size: int, num_workers: int, seed: int, epoch: int,
               plans: dict[int, list[list[int]]] | None = None) -> None:
        """Where this copy reads: called by StreamLoader before its DataLoader starts. `plans`: explicit
        [[shard, start], ...] per slot for `epoch` (a resume on another world size), else the standard plan."""
        self._names = list(self.shards())
        if not self._names:
            raise UsageError(f"{type(self).__name__}: shards() is empty; a streaming source needs at least one shard")
        self._where = (rank, world_size, max(num_workers, 1), seed)
        self._first = (epoch, plans)
        self._state: dict[str, Any] | None = None
        self._loaded = False

    def _slot(self) -> tuple[int, int]:
        rank, world_size, workers, _ = self._where
        info = get_worker_info()
        return rank * workers + (info.id if info else 0), world_size * workers

    def _start_epoch(self, epoch: int, plan: list[list[int]] | None) -> dict[str, Any]:
        """The state at the start of an epoch; `plan` None: the standard plan (recomputed, not stored)."""
        return {"epoch": epoch, "cursor": 0, "offset": plan[0][1] if plan else 0, "plan": plan}

    def plan(self, state: dict[str, Any]) -> list[list[int]]:
        """[[shard index, start offset], ...] this slot reads in the state's epoch."""
        if state["plan"] is not None:
            return state["plan"]
        slot, slots = self._slot()
        return [[s, 0] for s in shard_plan(len(self._names), self._where[3], state["epoch"], slot, slots)]

    def state_dict(self) -> dict[str, Any]:
        return dict(self._state) if self._state is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._state, self._loaded = dict(state), True

    def __iter__(self):
        # Decided here, not in the generator: a DataLoader reads state_dict() right after iter(), before the first
        # sample, and must see this epoch's starting position.
        if self._loaded:
            self._loaded = False  # resumed: continue the saved position
        elif self._state is None:
            epoch, plans = self._first
            slot, _ = self._slot()
            explicit = plans.get(slot, []) if plans is not None else None
            self._state = self._start_epoch(epoch, explicit)
        else:
            self._state = self._start_epoch(self._state["epoch"] + 1, None)  # the DataLoader began a new epoch
        return self._samples(self._state)

    def _samples(self, state: dict[str, Any]) -> Iterator[Any]:
        plan = self.plan(state)
        while state["cursor"] < len(plan):
            shard = plan[state["cursor"]][0]
            for sample in self.read(self._names[shard], state["offset"]):
                state["offset"] += 1  # before the yield: a batch holding this sample has consumed it
                yield sample
            state["cursor"] += 1
            state["offset"] = plan[state["cursor"]][1] if state["cursor"] < len(plan) else 0


class TokenShardStream(ShardedStream):
    """A prepared folder read as a stream: one shard per shard file, samples = windows of seq_len + 1 tokens at
    stride seq_len within the file, as (inputs, targets) int64 tensors (windows do not cross files here)."""

    def __init__(self, path: str | Path, seq_len: int, verify: str = "size"):
        from dist_train.data.tokens import TokenShards

        self.tokens = TokenShards(path, verify)
        self.seq_len = seq_len
        self.vocab_size = self.tokens.vocab_size

    def shards(self) -> list[str]:
        return [s.file for s in self.tokens.index.shards]

    def read(self, shard: str, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        i = next(k for k, s in enumerate(self.tokens.index.shards) if s.file == shard)
        first, count = int(self.tokens.starts[i]), self.tokens.index.shards[i].tokens
        for w in range(start, (count - 1) // self.seq_len):
            window = torch.from_numpy(self.tokens.read(first + w * self.seq_len, self.seq_len + 1).astype(np.int64))
            yield window[:-1], window[1:]


class JsonlStream(ShardedStream):
    """JSON-lines files, one shard each (sorted), one sample per line: `transform(record)` -> the sample (a
    module-level function, so that worker processes can unpickle it). A resume mid-file skips `start` lines
    (reading them, not decoding them)."""

    def __init__(self, files: Sequence[str | Path], transform: Callable[[Any], Any]):
        self.files, self.transform = sorted(str(f) for f in files), transform

    def shards(self) -> list[str]:
        return self.files

    def read(self, shard: str, start: int) -> Iterator[Any]:
        with open(shard, encoding="utf-8") as f:
            for number, line in enumerate(f):
                if number >= start:
                    yield self.transform(json.loads(line))


class _WithPosition:
    """collate_fn: the batch plus (worker id, its source's state after this batch), so that the main process
    knows each worker's shard-offset progress at exactly the batches it has consumed."""

    def __init__(self, dataset: ShardedStream):
        self.dataset = dataset  # in-process loading only; a worker uses its own copy (get_worker_info)

    def __call__(self, samples):
        from torch.utils.data import default_collate

        info = get_worker_info()
        source = info.dataset if info else self.dataset
        return default_collate(samples), (info.id if info else 0, source.state_dict())


class StreamLoader:
    """This rank's training batches from a ShardedStream: (epoch, step_in_epoch, micro_batches), endless."""

    def __init__(self, dataset: ShardedStream, layout: BatchLayout, seed: int, num_workers: int,
                 device: torch.device, pin_memory: bool = False, prefetch_factor: int = 2):
        try:
            from torchdata.stateful_dataloader import StatefulDataLoader
        except ImportError:
            raise UsageError("a streaming (iterable) training dataset needs torchdata: pip install "
                             "'dist-train[stream]' (or torchdata)") from None
        self.dataset, self.layout, self.seed, self.device = dataset, layout, seed, device
        self.num_workers = num_workers
        self.epoch, self.step_in_epoch = 0, 0
        self.plans: dict[int, list[list[int]]] | None = None  # explicit plans of the current epoch (elastic)
        self.positions: dict[int, dict[str, Any]] = {}  # worker id -> its source state after its last batch
        self._loader_state: dict | None = None
        self._gathered: list[dict[str, Any]] = []  # every rank's position at the last gather_state()
        self._saved_rank: dict[str, Any] | None = None  # restored: this rank's exact position
        self._saved_ranks: list[dict[str, Any]] | None = None  # restored: every rank's progress
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers else {}
        self._make = lambda: StatefulDataLoader(
            dataset, batch_size=layout.batch_size, drop_last=True, num_workers=num_workers,
            collate_fn=_WithPosition(dataset), pin_memory=pin_memory, snapshot_every_n_steps=1,
            generator=torch.Generator().manual_seed(seed * 7919 + layout.rank), **extra)
        self.loader = None
        self.steps_per_epoch = None  # unknown: an epoch ends when some rank's shards run out
        shards, workers = len(dataset.shards()), max(num_workers, 1)
        if shards <= (layout.world_size - 1) * workers:
            raise UsageError(f"{type(dataset).__name__}: {shards} shards for {layout.world_size} ranks x {workers} "
                             f"workers: the last rank would read nothing; use at least "
                             f"{(layout.world_size - 1) * workers + 1} shards or fewer data.num_workers")

    def _start(self) -> None:
        self.dataset.assign(self.layout.rank, self.layout.world_size, self.num_workers, self.seed, self.epoch,
                            self.plans)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata 0.11 on torch 2.13
            self.loader = self._make()
        if self._loader_state is not None:
            self.loader.load_state_dict(self._loader_state)

    def batches(self) -> Iterator[tuple[int, int, list[Any]]]:
        if self.loader is None:
            self._resume()
            self._start()
        accum = self.layout.grad_accum
        while True:
            it, produced = iter(self.loader), 0
            while True:
                micro = []
                for _ in range(accum):
                    item = next(it, None)
                    if item is None:
                        break
                    batch, (worker, position) = item
                    self.positions[worker] = position
                    micro.append(batch)
                if not self._everyone(len(micro) == accum):
                    break  # some rank ran out: the epoch ends here on every rank
                step = self.step_in_epoch
                self.step_in_epoch += 1
                produced += 1
                yield self.epoch, step, micro
            if produced == 0 and self.step_in_epoch == 0:
                raise RunError(f"epoch {self.epoch}: the streaming source gave some rank fewer than grad_accum x "
                               f"batch_size = {accum * self.layout.batch_size} samples; use more or longer shards")
            self.epoch, self.step_in_epoch, self.plans, self.positions = self.epoch + 1, 0, None, {}

    def _everyone(self, full: bool) -> bool:
        flag = torch.tensor([1 if full else 0], dtype=torch.int32, device=self.device)
        return bool(distributed.all_reduce_(flag, torch.distributed.ReduceOp.MIN).item())

    # ------------------------------------------------------------ checkpoint state
    #
    # Two parts, registered with the trainer's TrainState (dist_train.train_state): this rank's exact position
    # (local: saved beside the rank's random generators, restored on the same world size), and every rank's
    # shard-offset progress (global: collected by gather_state() before each checkpoint, saved once by rank 0),
    # which is what a resume on another layout continues from.

    def register(self, state) -> None:
        state.register("stream", _StreamProgress(self))
        state.register("stream_rank", self, local=True)

    def _rank_state(self) -> dict[str, Any]:
        return {"layout": [self.layout.world_size, self.num_workers, self.layout.batch_size],
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "progress": self._progress()}

    def _worker_progress(self, worker: int, slot: int, slots: int, names: int) -> tuple[list[list[int]], int, int]:
        """(plan, cursor, offset) of one worker after its last consumed batch."""
        state = self.positions.get(worker)
        if state is None:  # no batch from this worker yet in this epoch: its plan is untouched
            plan = self.plans.get(slot, []) if self.plans is not None else \
                [[s, 0] for s in shard_plan(names, self.seed, self.epoch, slot, slots)]
            return plan, 0, plan[0][1] if plan else 0
        plan = state["plan"] if state["plan"] is not None else \
            [[s, 0] for s in shard_plan(names, self.seed, state["epoch"], slot, slots)]
        return plan, state["cursor"], state["offset"]

    def _progress(self) -> dict[int, int]:
        """shard index -> samples of it consumed this epoch (DONE: finished), for the shards of this rank."""
        workers = max(self.num_workers, 1)
        progress: dict[int, int] = {}
        names = len(self.dataset.shards())
        for w in range(workers):
            plan, cursor, offset = self._worker_progress(w, self.layout.rank * workers + w,
                                                         self.layout.world_size * workers, names)
            for i, (shard, start) in enumerate(plan):
                progress[shard] = DONE if i < cursor else offset if i == cursor else start
        return progress

    def gather_state(self) -> None:
        """Collect every rank's progress for the global part of the next checkpoint (a collective)."""
        mine = self._rank_state()
        if torch.distributed.is_initialized() and self.layout.world_size > 1:
            ranks = [None] * self.layout.world_size
            torch.distributed.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        self._gathered = ranks

    def state_dict(self) -> dict[str, Any]:
        """This rank's exact position: the StatefulDataLoader's state (every worker's) and the step in epoch."""
        # `positions` too: after a resume, a worker that has not yielded a batch yet is where it was saved.
        return {**self._rank_state(), "positions": self.positions,
                "loader": self.loader.state_dict() if self.loader is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._saved_rank = state

    def _resume(self) -> None:
        """Before the first batch: continue this rank's exact position when the layout is the one it was saved
        with, else go on from every rank's merged shard progress."""
        layout = [self.layout.world_size, self.num_workers, self.layout.batch_size]
        mine, ranks = self._saved_rank, self._saved_ranks
        if mine is not None and mine["layout"] == layout:
            self.epoch, self.step_in_epoch, self._loader_state = mine["epoch"], mine["step_in_epoch"], mine["loader"]
            self.positions = {int(w): p for w, p in mine["positions"].items()}
            return
        if not ranks:
            return
        progress: dict[int, int] = {}
        for r in ranks:
            progress.update({int(k): v for k, v in r["progress"].items()})
        self.epoch, self.step_in_epoch = ranks[0]["epoch"], ranks[0]["step_in_epoch"]
        names = len(self.dataset.shards())
        order = EpochOrder(names, self.seed, self.epoch, SHARDS)[:].tolist()
        remaining = [[s, progress.get(s, 0)] for s in order if progress.get(s, 0) != DONE]
        slots = self.layout.world_size * max(self.num_workers, 1)
        self.plans = {slot: remaining[slot::slots] for slot in range(slots)}
        saved = ranks[0]["layout"]
        distributed.print0(f"data: streaming position saved by {saved[0]} ranks x {saved[1]} workers, resumed on "
                           f"{self.layout.world_size} x {self.num_workers}: epoch {self.epoch} goes on with its "
                           f"{len(remaining)} unfinished shards from their offsets (another order)")


class _StreamProgress:
    """The global part of a StreamLoader's state: every rank's position, as gathered before the checkpoint."""

    def __init__(self, loader: StreamLoader):
        self.loader = loader

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": self.loader._gathered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader._saved_ranks = state["ranks"]
