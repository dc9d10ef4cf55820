"""The strategy interface: everything the training loop asks of "how the model is distributed".

The loop calls, per optimizer step: `micro_step(is_last)` around each micro-batch's forward+backward, `autocast()`
around the forward, `backward(loss)`, then `step()` once (unscale, clip, optimizer, schedule, zero grads). It never
asks which strategy it has. `TorchStrategy` implements that for strategies built on a plain torch optimizer
(single, ddp, fsdp); DeepSpeed's engine owns those steps itself and implements the interface directly.

Checkpoints: `save_checkpoint(directory)` writes this strategy's state (model, optimizer, schedule, scaler) into a
folder that dist_train.checkpoint then commits atomically (with the trainer's own state beside it), and
`load_checkpoint(directory)` restores it. TorchStrategy does it with torch.distributed.checkpoint (DCP) for plain,
DDP and FSDP2 models alike: each rank writes its own shard and a checkpoint loads on another world size (DCP
reshards).
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager

import torch
from torch import nn

from dist_train.cluster import DistEnv
from dist_train.config.schema import Config
from dist_train.errors import UsageError
from dist_train.optim import build_optimizer, build_scheduler

if TYPE_CHECKING:
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

    def skip_step(self) -> None:
        """Drop this step's gradients without updating (train.on_nan: skip); the schedule still advances so the
        learning rate stays a function of the step number."""
        raise UsageError(f"train.on_nan: skip is not supported by strategy {self.name}; use stop")

    @abstractmethod
    def save_checkpoint(self, directory: Path) -> None:
        """Write model, optimizer, schedule and scaler state into `directory`; called on every rank, the folder is
        shared."""

    @abstractmethod
    def load_checkpoint(self, directory: Path) -> None:
        """Restore what save_checkpoint wrote (possibly by another world size)."""

    def async_save_checkpoint(self, directory: Path, process_group) -> Future:
        """Start a save and return a future that completes once every file is written. By default the save is
        synchronous and the future already done."""
        self.save_checkpoint(directory)
        done: Future = Future()
        done.set_result(None)
        return done

    @classmethod
    def load_consolidated(cls, directory: Path, model: nn.Module) -> None:
        """Load a checkpoint's weights into a plain, unwrapped `model` in one process (for export)."""
        raise NotImplementedError

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

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

    def setup(self, model: nn.Module, recipe: Recipe, layout: BatchLayout) -> None:
        self.layout = layout
        self.model = self.wrap(model.to(self.device))
        self.optimizer = build_optimizer(self.model.parameters(), self.config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, self.config.scheduler, self.config.train.max_steps)
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

    # ---------------------------------------------------------------- checkpoints (DCP)

    STATE_FILE = "strategy_state.pt"

    def _dcp_state(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        # get_state_dict gives the same keys (unwrapped names, full or sharded tensors) for a plain, DDP or FSDP2
        # model, which is what lets a checkpoint load under another strategy or world size.
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optimizer": optim_state}

    def _save_small_state(self, directory: Path) -> None:
        # Schedule and scaler are tiny and the same on every rank: rank 0 writes them.
        if self.env.is_main:
            state = {"scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler else None}
            torch.save(state, directory / self.STATE_FILE)

    def save_checkpoint(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp

        with _single_process_quiet():
            dcp.save(self._dcp_state(), checkpoint_id=directory, no_dist=not _distributed())
        self._save_small_state(directory)

    def async_save_checkpoint(self, directory: Path, process_group) -> Future:
        import torch.distributed.checkpoint as dcp

        self._save_small_state(directory)
        # async_save copies the state to CPU memory before returning, so training may change the parameters at once.
        return dcp.async_save(self._dcp_state(), checkpoint_id=directory, process_group=process_group,
                              no_dist=not _distributed())

    def load_checkpoint(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        state = self._dcp_state()
        with _single_process_quiet():
            dcp.load(state, checkpoint_id=directory, planner=weights_only_load_planner(), no_dist=not _distributed())
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        extra = torch.load(directory / self.STATE_FILE, weights_only=True, map_location="cpu")
        self.scheduler.load_state_dict(extra["scheduler"])
        if self.scaler and extra["scaler"]:
            self.scaler.load_state_dict(extra["scaler"])

    def load_model(self, directory: Path) -> None:
        """Only the model's weights from a checkpoint (any world size), into the wrapped model (for evaluation)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        state = {"model": get_model_state_dict(self.model)}
        with _single_process_quiet():
            dcp.load(state, checkpoint_id=directory, planner=weights_only_load_planner(), no_dist=not _distributed())
        set_model_state_dict(self.model, state["model"])

    @classmethod
    def load_consolidated(cls, directory: Path, model: nn.Module) -> None:
        import torch.distributed.checkpoint as dcp

        state = {"model": model.state_dict()}
        # no_dist: one process reads every rank's shard and assembles full tensors.
        with _single_process_quiet():
            dcp.load(state, checkpoint_id=directory, planner=weights_only_load_planner(), no_dist=True)
        model.load_state_dict(state["model"])

    def teardown(self) -> None:
        self.scaler = None
        super().teardown()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns that it assumes one process even when told so (no_dist=True); that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def weights_only_load_planner():
    """DCP's default load planner, except that non-tensor entries (optimizer hyper-parameters, ...) are read with
    `torch.load(weights_only=True)`: the default unpickles them with weights_only=False, which would run whatever
    code a tampered checkpoint holds."""
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element

    class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return WeightsOnlyLoadPlanner()
