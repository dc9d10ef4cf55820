"""The strategy interface: everything the training loop asks of "how the model is distributed".

The loop calls, per optimizer step: `micro_step(is_last)` around each micro-batch's forward+backward, `autocast()`
around the forward, `backward(loss)`, then `step()` once (unscale, clip, optimizer, schedule, zero grads). It never
asks which strategy it has. `TorchStrategy` implements that for strategies built on a plain torch optimizer
(single, ddp, fsdp); DeepSpeed's engine owns those steps itself and implements the interface directly.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ContextManager

import torch
from torch import nn

from dist_train.cluster import DistEnv
from dist_train.config.schema import Config
from dist_train.errors import UsageError
from dist_train.optim import build_optimizer, build_scheduler

if TYPE_CHECKING:
    from dist_train.recipe import Recipe

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    def setup(self, model: nn.Module, recipe: Recipe) -> None:
        """Move/wrap `model`, build optimizer and schedule; set self.model/optimizer/scheduler. `recipe` is
        there for its strategy hooks (e.g. `fsdp_units`)."""

    def micro_step(self, is_last: bool) -> ContextManager:
        """Context for one micro-batch's forward and backward; gradients are synchronised only when is_last."""
        return contextlib.nullcontext()

    def autocast(self) -> ContextManager:
        """Context for the forward: autocast to train.precision (a strategy that casts parameters itself, as FSDP's
        mixed-precision policy does, returns a null context)."""
        precision = self.config.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[precision])

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self) -> torch.Tensor | None:
        """Finish the optimizer step; returns the pre-clip global gradient norm when clipping is on."""

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

    def setup(self, model: nn.Module, recipe: Recipe) -> None:
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

    def teardown(self) -> None:
        self.scaler = None
        super().teardown()
