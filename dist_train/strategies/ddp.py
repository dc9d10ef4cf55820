"""DistributedDataParallel: every rank holds the whole model; gradients are averaged across ranks in backward.

With gradient accumulation, the all-reduce on all but the last micro-step would average partial gradients that the
next micro-step changes anyway: `no_sync` skips it, so a step costs one all-reduce whatever grad_accum is.
"""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dist_train.strategies.base import NO_CONTEXT, TorchStrategy
from dist_train.strategies.parallelize import parallelize


class DDPStrategy(TorchStrategy):
    name = "ddp"

    def wrap(self, model: nn.Module) -> nn.Module:
        # Checkpointing and compile before wrapping, as for fsdp (see parallelize.py).
        parallelize(model, self.units, ac_every=self.ac_every,
                    compile_modules=[model] if self.config.train.compile else None)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def micro_step(self, is_last: bool):
        return NO_CONTEXT if is_last else self.model.no_sync()

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.model.module
