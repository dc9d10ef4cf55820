"""One process, no wrapper: the model trains as written (compiled in place with `train.compile`)."""

from __future__ import annotations

from torch import nn

from dist_train.strategies.base import TorchStrategy
from dist_train.strategies.transforms import apply_compile


class SingleStrategy(TorchStrategy):
    name = "single"

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.config.train.compile:
            apply_compile([model])
        return model
