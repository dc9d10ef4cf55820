"""One process, no wrapper: the model trains as written (activation checkpointing and compile applied in place)."""

from __future__ import annotations

from torch import nn

from dist_train.strategies.base import TorchStrategy
from dist_train.strategies.parallelize import parallelize


class SingleStrategy(TorchStrategy):
    name = "single"

    def wrap(self, model: nn.Module) -> nn.Module:
        return parallelize(model, self.units, ac_every=self.ac_every,
                           compile_modules=[model] if self.config.train.compile else None)
