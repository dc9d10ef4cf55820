"""The strategy interface: everything the training loop asks of "how the model is distributed".

The loop calls, per optimizer step: `micro_step(is_last)` around each micro-batch's forward+backward, `autocast()`
around the forward, `backward(loss)`, then `step()` once (unscale, clip, optimizer, schedule, zero grads). It never
asks which strategy it has. `TorchStrategy` implements that for strategies built on a plain torch optimizer
(single, ddp, fsdp); DeepSpeed's engine owns those steps itself and implements the interface directly.

Checkpoints: `save_checkpoint(target)` writes this strategy's state (model, optimizer, schedule, scaler) into a
folder that dist_train.checkpoint then commits atomically (with the trainer's own state beside it), through a
`SaveTarget` that hashes every file while it is written; `load_checkpoint(location)` restores it, reading only
through dist_train.checkpoint.safe_load (a checkpoint never runs code). TorchStrategy does it with
torch.distributed.checkpoint (DCP) for plain, DDP and FSDP2 models alike: each rank writes its own shard and a
checkpoint loads on another world size (DCP reshards).
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import Future
from contextlib import AbstractContextManager as ContextManager
from typing import TYPE_CHECKING

import torch
from torch import nn

from dist_train import distributed
from dist_train.cluster import DistEnv
from dist_train.config.schema import Config
from dist_train.errors import UsageError
from dist_train.optim import build_optimizer, build_scheduler, param_groups
from dist_train.parallel_dims import ParallelDims

if TYPE_CHECKING:
    from dist_train.checkpoint.hashing import SaveTarget
    from dist_train.data import BatchLayout
    from dist_train.recipe import Recipe

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# nullcontext holds no state, so one instance serves every micro-batch (no object to build per call).
NO_CONTEXT = contextlib.nullcontext()


class Strategy(ABC):
    name: str = "?"

    def __init__(self, config: Config, env: DistEnv, device: torch.device):
        self.config, self.env, self.device = config, env, device
        self.model: nn.Module | None = None  # the wrapped model the loop calls
        self.optimizer = None
        self.scheduler = None

    def check(self) -> None:
        """Refuse configurations this strategy cannot run, with a UsageError (called before any work)."""
        if self.config.train.precision == "fp16" and self.device.type != "cuda":
            raise UsageError(
                f"train.precision: fp16 needs a CUDA device (this run is on {self.device.type}); "
                "use bf16 or fp32 on this machine"
            )
        ParallelDims.from_config(self.config, self.env.world_size)  # a mesh shape only fsdp can take

    @property
    def ac_every(self) -> int:
        """Activation checkpointing: 0 off, 1 every unit, k every k-th unit (train.activation_checkpointing)."""
        return self.config.train.activation_checkpointing

    def prepare(self, model: nn.Module) -> nn.Module:
        """What every strategy does to the recipe's model before its own transforms: move it to the device and,
        with train.sync_batchnorm on several processes, make BatchNorm use the statistics of the global batch."""
        model = model.to(self.device)
        if self.config.train.sync_batchnorm and self.env.is_distributed:
            from dist_train.strategies.sync_batchnorm import convert_sync_batchnorm

            model = convert_sync_batchnorm(model, self.device)
        return model

    def build_optimizer(self, model: nn.Module):
        """Optimizer (parameter groups by the unwrapped model's names) and schedule."""
        self.optimizer = build_optimizer(param_groups(model, self.config.optimizer), self.config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, self.config.scheduler, self.config.train.max_steps)

    @abstractmethod
    def setup(self, model: nn.Module, recipe: Recipe, layout: BatchLayout) -> None:
        """Move/wrap `model`, build optimizer and schedule; set self.model/optimizer/scheduler. `recipe` is
        there for its strategy hooks (e.g. `fsdp_units`); `layout` is the batch layout the trainer derived (the
        config's train.grad_accum may differ from it on a resume that keeps the global batch)."""

    def micro_step(self, is_last: bool) -> ContextManager:
        """Context for one micro-batch's forward and backward; gradients are synchronised only when is_last."""
        return NO_CONTEXT

    def autocast(self) -> ContextManager:
        """Context for the forward: autocast to train.precision (a strategy that casts parameters itself, as FSDP's
        mixed-precision policy does, returns a null context)."""
        precision = self.config.train.precision
        if precision == "fp32":
            return NO_CONTEXT
        return torch.autocast(self.device.type, dtype=DTYPES[precision])

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self) -> torch.Tensor | None:
        """Finish the optimizer step; returns the pre-clip global gradient norm when clipping is on."""

    def scale_gradients(self, factor: torch.Tensor) -> None:
        """Multiply the accumulated gradients (already averaged over ranks) by `factor`, a scalar tensor on the
        device, before step(): how token-weighted losses divide by the global count (dist_train.token_weighted)."""
        raise UsageError(f"Recipe.loss: token-weighted (sum, count) losses are not supported by strategy {self.name}; "
                         "return the mean loss, or use strategy ddp, fsdp or single")

    def skip_step(self) -> None:
        """Drop this step's gradients without updating (train.on_nan: skip); the schedule still advances so the
        learning rate stays a function of the step number."""
        raise UsageError(f"train.on_nan: skip is not supported by strategy {self.name}; use stop")

    @abstractmethod
    def save_checkpoint(self, target: SaveTarget) -> None:
        """Write model, optimizer, schedule and scaler state into `target.location`, on every rank (the folder is
        shared): DCP through `target.dcp_writer()`, small files through `target.put(name, obj)`, so that each file
        is hashed while written (else the checkpointer hashes the folder afterwards, split across ranks)."""

    @abstractmethod
    def load_checkpoint(self, location) -> None:
        """Restore what save_checkpoint wrote (possibly by another world size). Read through
        dist_train.checkpoint.safe_load only."""

    def async_save_checkpoint(self, target: SaveTarget, process_group) -> Future:
        """Start a save and return a future that completes once every file is written. By default the save is
        synchronous and the future already done."""
        self.save_checkpoint(target)
        done: Future = Future()
        done.set_result(None)
        return done

    @classmethod
    def load_consolidated(cls, location, model: nn.Module, weights: str = "model") -> None:
        """Load a checkpoint's weights (`weights`: "model", or "ema" for the EMA of them) into a plain, unwrapped
        `model` in one process (for export and evaluate)."""
        raise NotImplementedError

    @classmethod
    def has_ema(cls, location) -> bool:
        """Whether the checkpoint holds an EMA of the weights (train.ema was on)."""
        return False

    # ---------------------------------------------------------------- state kept beside the model (the EMA)

    def ema_tensors(self) -> dict[str, torch.Tensor]:
        """This rank's part of every parameter and persistent buffer, as the strategy keeps it and the optimizer
        updates it in place: what an EMA of the weights averages, and swaps in for evaluation. The whole tensors
        here; a DTensor under fsdp (whose operations touch only the local shard)."""
        from dist_train.strategies.buffers import named_persistent_buffers

        model = self.unwrapped_model
        return {**dict(model.named_parameters()), **dict(named_persistent_buffers(model))}

    def ema_tensors_written(self) -> None:  # noqa: B027 - a hook: most strategies need nothing here
        """Called after the tensors of ema_tensors() were overwritten (an EMA swapped in or out)."""

    def register_state(self, name: str, component, train_state) -> None:
        """Checkpoint `component` (a state_dict of tensors shaped like ema_tensors()) where this strategy's own
        state goes. Here: with the trainer's state, written by rank 0 (the tensors are the same on every rank)."""
        train_state.register(name, component)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's whole state_dict on rank 0 (a collective under sharding; other ranks may get {})."""
        return self.unwrapped_model.state_dict()

    @property
    def lr(self) -> float:
        """The schedule's current lr for optimizer.lr (groups with an lr_scale run at a multiple of it)."""
        group = self.optimizer.param_groups[0]
        return group["lr"] / group["lr_scale"] if group.get("lr_scale") else group["lr"]

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unwrapped_model.parameters())

    def describe(self) -> str:
        return self.name

    def teardown(self) -> None:
        """Drop every reference to wrapped objects (must happen before the process group is destroyed)."""
        self.model = self.optimizer = self.scheduler = None


class TorchStrategy(Strategy):
    """A torch optimizer + LambdaLR schedule + (for fp16) a GradScaler around whatever wrapper `wrap` applies."""

    def __init__(self, config: Config, env: DistEnv, device: torch.device):
        super().__init__(config, env, device)
        self.extra_state: dict = {}  # name -> component checkpointed in the DCP state beside the model (the EMA)

    def setup(self, model: nn.Module, recipe: Recipe, layout: BatchLayout) -> None:
        self.layout = layout
        model = self.prepare(model)
        # The units for activation checkpointing / compile / FSDP, and the recipe's tensor-parallel plan, as
        # `wrap` needs them.
        self.units, self.recipe = recipe.fsdp_units(model), recipe
        self.model = self.wrap(model)
        self.build_optimizer(self.unwrapped_model)
        fp16 = self.config.train.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    def step(self) -> torch.Tensor | None:
        norm = None
        if self.scaler:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        if self.config.train.clip_grad_norm is not None:
            norm = self.clip_grad_norm(self.config.train.clip_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def skip_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    @torch.no_grad()
    def scale_gradients(self, factor: torch.Tensor) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        # FSDP2 gradients are DTensors: scale each rank's shard in place (to_local is the shard itself here).
        local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
        by_dtype: dict[torch.dtype, torch.Tensor] = {}
        for g in local:
            g.mul_(by_dtype.setdefault(g.dtype, factor.to(g.dtype)))

    # ---------------------------------------------------------------- checkpoints (DCP)

    STATE_FILE = "strategy_state.pt"

    def register_state(self, name: str, component, train_state) -> None:
        """Into the DCP checkpoint beside the model: its tensors are saved as this rank's shards and load,
        resharded, on another world size or mesh as the model's do."""
        self.extra_state[name] = component

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=_distributed())
        return get_model_state_dict(self.model, options=options)

    def _dcp_state(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        # get_state_dict gives the same keys (unwrapped names, full or sharded tensors) for a plain, DDP or FSDP2
        # model, which is what lets a checkpoint load under another strategy or world size.
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optimizer": optim_state,
                **{name: component.state_dict() for name, component in self.extra_state.items()}}

    def _save_small_state(self, target) -> None:
        # Schedule and scaler are tiny and the same on every rank: rank 0 writes them.
        if self.env.is_main:
            target.put(self.STATE_FILE, {"scheduler": self.scheduler.state_dict(),
                                         "scaler": self.scaler.state_dict() if self.scaler else None})

    def save_checkpoint(self, target) -> None:
        import torch.distributed.checkpoint as dcp

        self._save_small_state(target)
        with _single_process_quiet():
            dcp.save(self._dcp_state(), storage_writer=target.dcp_writer(), planner=target.dcp_planner(),
                     no_dist=not _distributed())

    def async_save_checkpoint(self, target, process_group) -> Future:
        import torch.distributed.checkpoint as dcp

        self._save_small_state(target)
        # async_save copies the state to CPU memory before returning, so training may change the parameters at once.
        return dcp.async_save(self._dcp_state(), storage_writer=target.dcp_writer(), planner=target.dcp_planner(),
                              process_group=process_group, no_dist=not _distributed())

    def load_checkpoint(self, location) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        from dist_train.checkpoint import safe_load
        from dist_train.checkpoint.storage import open_storage

        state = self._dcp_state()
        saved = _saved_keys(location) if self.extra_state else set()  # one more read of .metadata, only if needed
        for name in list(self.extra_state):
            if not any(key.startswith(f"{name}.") for key in saved):
                distributed.print0(f"checkpoint: {location} has no {name} state (switched on since it was saved); "
                                   "it starts fresh")
                del state[name]
        safe_load.dcp_load(state, location, no_dist=not _distributed())  # quiet about the one-process case itself
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        for name, component in self.extra_state.items():
            if name in state:
                component.load_state_dict(state[name])
        storage = open_storage(location)
        extra = safe_load.torch_load(storage.read_bytes(storage.join(location, self.STATE_FILE)), self.STATE_FILE)
        self.scheduler.load_state_dict(extra["scheduler"])
        if self.scaler and extra["scaler"]:
            self.scaler.load_state_dict(extra["scaler"])

    def load_model(self, location, weights: str = "model") -> None:
        """Only the model's weights (or, `weights="ema"`, their EMA) from a checkpoint (any world size, any mesh),
        into the wrapped model (for evaluation)."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             set_model_state_dict)

        from dist_train.checkpoint import safe_load

        model_state = get_model_state_dict(self.model)
        if weights == "ema":  # the shadow has each parameter once (tied ones under their first name)
            saved = _saved_keys(location)
            state = {"ema": {"shadow": {n: t for n, t in model_state.items() if f"ema.shadow.{n}" in saved}}}
        else:
            state = {"model": model_state}
        safe_load.dcp_load(state, location, no_dist=not _distributed())  # quiet about the one-process case itself
        loaded = state["model"] if weights == "model" else state["ema"]["shadow"]
        set_model_state_dict(self.model, loaded, options=StateDictOptions(strict=weights == "model"))

    @classmethod
    def load_consolidated(cls, location, model: nn.Module, weights: str = "model") -> None:
        from dist_train.checkpoint import safe_load

        # The EMA's shadow has the model's parameter names (tied parameters once) and persistent buffers.
        full, saved = model.state_dict(), _saved_keys(location) if weights == "ema" else set()
        names = [n for n in full if weights == "model" or f"ema.shadow.{n}" in saved]
        state = {"model": {n: full[n] for n in names}} if weights == "model" else \
            {"ema": {"shadow": {n: full[n] for n in names}}}
        # no_dist: one process reads every rank's shard and assembles full tensors.
        safe_load.dcp_load(state, location, no_dist=True)  # quiet about the one-process case itself
        loaded = state["model"] if weights == "model" else state["ema"]["shadow"]
        missing = model.load_state_dict(loaded, strict=False).missing_keys
        tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
        if set(missing) - tied:
            raise UsageError(f"checkpoint: {location} lacks {weights} weights for {sorted(set(missing) - tied)[:3]}")

    @classmethod
    def has_ema(cls, location) -> bool:
        return any(key.startswith("ema.shadow.") for key in _saved_keys(location))

    def teardown(self) -> None:
        self.scaler = None
        super().teardown()


def _saved_keys(directory) -> set[str]:
    """The flattened keys of a DCP checkpoint ("model.layers.0.attn.wq.weight", "ema.shadow....")."""
    from dist_train.checkpoint import safe_load

    # Read through the restricted unpickler: `.metadata` is a pickle, and a checkpoint holds data, never code.
    return set(safe_load.storage_reader(directory).read_metadata().state_dict_metadata)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns that it assumes one process even when told so (no_dist=True); that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield
